"""Training HairCLIP mappers: the official losses, data sampling and loop, with batches, AMP and DDP.

``losses`` holds one small module per loss term, ``data`` the latents dataset and the edit sampling,
``trainer`` the loop and checkpoints (written in the ``hairclip.pt`` layout), ``cli`` the ``hairclip train``
and ``hairclip invert`` commands.

Names that mirror the official training options, the checkpoint's ``opts`` and the official loss and sample
names (``color_description``, ``color_manipulation_prob``, ``image_color_lambda``, ``loss_text_color``,
``color_text``, ...) keep the official "color"; the rest of our code says "colour".
"""
