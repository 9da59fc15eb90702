"""HairCLIP Studio backend: the HairCLIP networks, the edit pipeline and the server."""

__version__ = "0.1.0"
