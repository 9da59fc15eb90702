"""Training HairCLIP mappers: the official losses, data sampling and loop, with batches, AMP and DDP.

``losses`` holds one small module per loss term, ``data`` the latents dataset and the edit sampling,
``trainer`` the loop and checkpoints (written in the ``hairclip.pt`` layout), ``cli`` the ``hairclip train``
and ``hairclip invert`` commands.
"""
