"""attnlab: five results about self-attention, each a working, tested, measured tool."""

__version__ = "0.1.0"

#: The module subpackages, in tour order. A module that is not built yet is simply absent.
MODULES = ("machines", "memorize", "nbl", "detr", "depth")
