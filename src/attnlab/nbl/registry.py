"""The alternatives NBL chooses between, each defined once, by name (the CLI's ``choices=``, the API's
checks and the tests' ``parametrize`` all read these dicts), and the settings of an experiment
(:class:`Config`, :class:`Calibration`). Kept free of numpy and torch: the CLI's parser and the tour's
profiles import it.

Notation (paper §3): X is the residual stream entering a layer (before its input norm), A the attention
output (after the output projection, before the residual add), Y = X + A.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..core.errors import AttnlabError


@dataclass(frozen=True)
class Selector:
    """A per-layer score, lower = replace first; ``function`` names a function of a layer's
    :class:`~attnlab.nbl.stats.LayerStats` in :mod:`attnlab.nbl.scores`, imported on first use."""

    function: str
    help: str
    #: whether it scores runs of consecutive layers (k layers are then one contiguous run) rather than layers
    contiguous: bool = False

    def resolve(self) -> Callable[[Any], float]:
        return getattr(importlib.import_module("attnlab.nbl.scores"), self.function)


#: The layer scores, all computed from the same streamed statistics.
SELECTORS: dict[str, Selector] = {
    "cca": Selector("cca_of", "the paper's bound (Thm 3.2): sum over the canonical correlations of X and Y of "
                              "1 - rho^2"),
    "nmse": Selector("nmse_of", "the LMMSE map's own error (Prop. 3.1) relative to tr(C_YY)"),
    "cosine": Selector("cosine_of", "Attention Drop (He et al.): 1 - mean cos(X, X + A)"),
    "bi": Selector("bi_of", "ShortGPT block influence (Men et al.): 1 - mean cos of the block's input and output"),
    "angular": Selector("angular_of", "Gromov et al.'s angular distance arccos(cos(h_l, h_l+k)) / pi between the "
                                      "input of block l and the output of block l+k-1: k layers are the contiguous "
                                      "run with the smallest", contiguous=True),
}

#: What takes the place of a replaced attention sub-layer.
METHODS: dict[str, str] = {
    "nbl": "the LMMSE affine map W X + b (paper Prop. 3.1)",
    "drop": "nothing: the sub-layer adds zero to the residual stream (Attention Drop, He et al.)",
    "block": "nothing for the whole block: attention and MLP both add zero, the layer passes its input on "
             "(ShortGPT, Men et al.; Gromov et al.)",
}


@dataclass(frozen=True)
class Config:
    """One way to replace k layers; its label ``method/selector[/sequential][/keepN...]`` names it."""

    method: str      # a key of registry.METHODS
    selector: str    # a key of registry.SELECTORS
    sequential: bool = False
    keep: tuple[int, ...] = ()  # layers never replaced

    @property
    def label(self) -> str:
        return (f"{self.method}/{self.selector}" + ("/sequential" if self.sequential else "")
                + "".join(f"/keep{i}" for i in self.keep))

    @classmethod
    def parse(cls, label: str) -> Config:
        """The config of a label (the inverse of :attr:`label`); one-line errors for anything else."""
        method, _, rest = label.partition("/")
        selector, *flags = rest.split("/")
        usage = f"config {label!r}: expected METHOD/SELECTOR[/sequential][/keepN], e.g. nbl/cca or drop/cosine"
        if method not in METHODS or selector not in SELECTORS:
            raise AttnlabError(f"{usage} (methods: {', '.join(METHODS)}; selectors: {', '.join(SELECTORS)})")
        keep = tuple(int(f[4:]) for f in flags if f.startswith("keep") and f[4:].isdigit())
        sequential = "sequential" in flags
        config = cls(method, selector, sequential, keep)
        if config.label != label:
            raise AttnlabError(usage)
        return config


@dataclass(frozen=True)
class Calibration:
    """The calibration text and how it is cut: ``tokens`` tokens of ``source``'s calibration split, its
    documents in the order ``seed`` shuffles them, in blocks of ``seq_len``, ``batch_size`` blocks per
    forward pass."""

    source: str = "builtin"
    tokens: int = 16384
    seq_len: int = 256
    batch_size: int = 8
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def choice_help(registry: dict[str, Any]) -> str:
    """'name (what it is); ...' for an option's help text."""
    return "; ".join(f"{name}: {getattr(v, 'help', v)}" for name, v in registry.items())
