"""The edit pipeline, one module per stage: faces, align, invert, conditions, edit, synthesize, parse, composite."""

# ``--detector``: the official dlib alignment, S3FD + FAN, or a centred stand-in face. Here, where the command
# line can read it without importing torch.
DETECTORS = ("dlib", "fan", "centre")
