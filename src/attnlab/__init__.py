"""attnlab: five results about self-attention, each a working, tested, measured tool."""

__version__ = "0.1.0"

#: The module subpackages, in tour order. A module that is not built yet is simply absent.
MODULES = ("machines", "memorize", "nbl", "detr", "depth")


def available_modules() -> list[str]:
    """The module subpackages present in this installation (those with a ``cli.py``), in tour order."""
    import importlib.util

    return [m for m in MODULES
            if importlib.util.find_spec(f"attnlab.{m}") is not None and importlib.util.find_spec(f"attnlab.{m}.cli")]
