"""The edit pipeline, one module per stage: faces, align, invert, conditions, edit, synthesize, parse, composite."""
