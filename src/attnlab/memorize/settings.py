"""Every setting of one m* search in one table (default, type, range, help), and the registries its named
settings choose from. The CLI's flags and ``choices=``, the sweep configs' checks, :data:`DEFAULTS` and the
tests read these dicts, so adding an init, a target layout or a PEFT method is one entry here.

Light on purpose (stdlib only): the CLI builds its parser from it without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..core.errors import AttnlabError

#: Backbone initialisations -> what the blocks' matrices get (the abstract: the backbone's initialisation
#: matters; at gain 1 attention is near uniform and a prompt can only add a fixed bias, Petrov et al. 2024).
#: Embeddings are N(0, 1) and the readout N(0, 1/d) in every scheme (see ``backbone.init_weights``).
INITS: dict[str, str] = {
    "gaussian": "W ~ N(0, gain^2/fan_in)",
    "orthogonal": "(semi-)orthogonal W times gain",
    "identity": "value and output maps the identity, small query/key and MLP (near-uniform attention)",
    "trained": "gaussian, then briefly trained on next-token prediction over a random Markov chain",
}

#: Target layouts -> what is memorized (see :mod:`attnlab.memorize.data`).
TARGETS: dict[str, str] = {
    "last": "one label per sequence, read at the last position",
    "every": "whole sequences: the next token at every position (greedy decoding regenerates them)",
}

#: How the backbone's weights are drawn from its seed. "invariant": the blocks, token embeddings and readout do not
#: depend on max_len = seq_len + gen_steps (issue 14: otherwise the T and seq_len experiments compare different
#: random backbones). "legacy" is the draw of every sweep logged before that change, kept so those folders are read
#: and resumed as what they are.
DRAWS: dict[str, str] = {
    "invariant": "one generator for embeddings, readout and blocks; positions (rows drawn 16 at a time) and "
                 "init='trained' pretraining (at a fixed length) from streams of their own",
    "legacy": "one generator, the position table of max_len rows drawn before the blocks, so every later weight "
              "depends on seq_len + gen_steps (sweeps logged before the invariant draw)",
}

#: What the backbone's logits range over (issue 14: exact memorization is the argmax over the WHOLE vocabulary at the
#: target positions, the criterion PEFT's causal LMs have). "classes" is the read-out of every sweep logged before.
READOUTS: dict[str, str] = {
    "vocab": "logits over the whole vocabulary (an LM head; labels are token ids), exact = argmax over every token",
    "classes": "logits over the n_classes labels only (sweeps logged before the whole-vocabulary criterion)",
}

#: PEFT methods -> the peft config class that sets each up (prompt tuning, Lester et al. 2021; prefix
#: tuning, Li & Liang 2021).
METHODS: dict[str, str] = {"prompt": "PromptTuningConfig", "prefix": "PrefixTuningConfig"}


@dataclass(frozen=True)
class Setting:
    """One setting: its default, help text and allowed values. Ints are at least ``low``; floats are finite and
    positive; strings are names in ``choices``; ``optional`` settings may be None (their default)."""

    default: Any
    help: str
    kind: type = int
    low: int = 1
    choices: dict[str, str] | None = None
    optional: bool = False

    def expected(self, null: bool = True) -> str:
        """What a value must be; ``null``: say that None is allowed where it is (a config can spell it)."""
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return "one of " + ", ".join(self.choices or {})
        number = f"an integer >= {self.low}" if self.kind is int else "a finite number > 0"
        return number + (" or null" if self.optional and null else "")

    def allows(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.kind is bool:
            return isinstance(value, bool)
        if isinstance(value, bool):  # a bool is an int to Python, never a count or a rate here
            return False
        if self.kind is str:
            return isinstance(value, str) and value in (self.choices or {})
        if self.kind is int:
            return isinstance(value, int) and value >= self.low
        return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


#: The fewest prompt seeds per length for p(m) to mean anything (issue 14 asks for >= 5).
MIN_PROMPT_SEEDS = 5

SETTINGS: dict[str, Setting] = {
    "n_pairs": Setting(64, "number of sequences to memorize"),
    "seq_len": Setting(8, "tokens per sequence"),
    "vocab": Setting(64, "input vocabulary"),
    "n_classes": Setting(8, "label classes", low=2),
    "target": Setting("last", "what is memorized", str, choices=TARGETS),
    "rank": Setting(None, "low-rank labels of this rank (default: random labels)", optional=True),
    "gen_steps": Setting(0, "autoregressive generation steps T before the answer is read", low=0),
    "d_model": Setting(32, "backbone width"),
    "n_heads": Setting(4, "attention heads"),
    "n_layers": Setting(2, "transformer blocks"),
    "d_ff": Setting(128, "MLP hidden width"),
    "norm": Setting(True, "pre-norm LayerNorms in the blocks and before the readout", bool),
    "init": Setting("gaussian", "backbone initialisation", str, choices=INITS),
    "gain": Setting(3.0, "init scale: weights ~ N(0, gain^2/fan_in)", float),
    "train_steps": Setting(300, "pretraining steps for init 'trained'"),
    "lr": Setting(0.1, "Adam learning rate for the prompt", float),
    "clip": Setting(1.0, "gradient-norm clip", float),
    "max_steps": Setting(400, "step budget per probe (part of the definition of m*)"),
    "m_max": Setting(256, "largest prompt length tried"),
    "restarts": Setting(2, "prompt initialisations tried before a length is declared failed"),
    "prompt_seeds": Setting(None, "m* as a statistic: fit this many prompt seeds (>= 5) at every length tried, "
                                  "batched, instead of restarts; p(m) = the share that memorizes within max_steps, "
                                  "m*_q = the smallest m with p(m) >= q", low=MIN_PROMPT_SEEDS,
                          optional=True),
    "short_steps": Setting(None, "with prompt_seeds: a second, shorter step budget (< max_steps) whose p(m) and "
                                 "m*_q are read off the same fits (a gap between the two shows a budget-bound m*)",
                           low=0, optional=True),
    "seed": Setting(0, "seed of the data, the backbone and the prompts (unless their own seeds are set)", low=0),
    "m_start": Setting(1, "first length of the doubling (shorter ones are taken to fail if it fails)"),
    "data_seed": Setting(None, "seed of the dataset (default: seed)", low=0, optional=True),
    "backbone_seed": Setting(None, "seed of the frozen backbone's weights (default: seed)", low=0, optional=True),
    "prompt_seed": Setting(None, "seed of the prompt initialisations (default: seed)", low=0, optional=True),
    "backbone_draw": Setting("invariant", "how the backbone's weights are drawn from its seed", str, choices=DRAWS),
    "readout": Setting("vocab", "what the logits (and so the exact argmax) range over", str, choices=READOUTS),
}

#: The parts of a search that draw random numbers, each from ``<part>_seed`` (or ``seed`` when that is None).
SEEDED_PARTS = ("data", "backbone", "prompt")

#: Every setting of one m* search, with its default. A sweep config overrides them in ``base`` and per experiment.
DEFAULTS: dict[str, Any] = {name: s.default for name, s in SETTINGS.items()}


def part_seed(settings: dict[str, Any], part: str) -> int:
    """The seed of one of :data:`SEEDED_PARTS`: its own setting, or the common ``seed`` when that is None."""
    own = settings.get(f"{part}_seed")
    return settings["seed"] if own is None else own


def check_settings(settings: dict[str, Any], where: str = "") -> None:
    """Raise a one-line :class:`AttnlabError` (prefixed by ``where``) for an unknown setting or a value of the
    wrong type or range. Relations between settings are checked where they are used (``sweep.build``)."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise AttnlabError(f"{where}unknown settings {', '.join(unknown)} (known: {', '.join(SETTINGS)})")
    for name, value in settings.items():
        if not SETTINGS[name].allows(value):
            raise AttnlabError(f"{where}{name} must be {SETTINGS[name].expected()}, got {value!r}")
