"""The networks of HairCLIP, written to load the official checkpoints unchanged.

One module per network family: ``stylegan2`` (generator), ``e4e`` (encoder), ``irse`` (IR-SE50 blocks and
ArcFace backbone), ``mapper`` (HairCLIP's latent mapper around CLIP), ``parsenet`` (face parser), and ``ops``
(upfirdn2d and bias + leaky ReLU, pure PyTorch with optional faster paths), and the face detector ``s3fd`` and
landmark network ``fan`` whose published weights the face stage loads.
"""
