"""A memorizing prompt you can keep: the folder ``attnlab memorize search --save DIR`` writes, and its check.

``DIR/backbone``: the frozen backbone as a transformers GPT-2 (:mod:`attnlab.memorize.gpt2`; ``save_pretrained``,
safetensors). ``DIR/data``: ``data.safetensors`` (``tokens``, ``targets`` with -100 off the scored positions,
``scored``) and ``data.json`` (sizes, layout, how it was made). ``DIR/adapter``: the prompt as a PEFT
prompt-tuning adapter, so ``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(DIR/backbone),
DIR/adapter)`` is the prompted model. ``DIR/memorize.json``: the search's settings and the prompt's fit.

The criterion, on every side (search, :func:`verify`, :func:`generated`): exact memorization is the argmax over the
whole vocabulary equal to the target at every scored position of every example (Wang & Lin 2025, the prompt-tuning
setting; labels are token ids).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from ..core.atomic import atomic_write_json
from ..core.errors import AttnlabError, require
from .backbone import Backbone
from .data import IGNORE, MemorizeData
from .gpt2 import to_gpt2
from .tune import exact_match, min_margin

#: The marker kind of a saved folder (``--overwrite`` replaces only one of these).
KIND = "memorize artifact"
#: The parts of a folder, and a file each must hold.
PARTS = {"backbone": "config.json", "adapter": "adapter_config.json", "data": "data.safetensors"}
DATA_JSON = "data.json"
INFO = "memorize.json"


def _quiet_hf() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # sub-second "Loading weights" bars are noise on stderr
    hf_logging.set_verbosity_error()


def prompted_model(model, prompt: torch.Tensor):
    """``model`` (a transformers causal LM) wrapped by PEFT prompt tuning with ``prompt`` (m, d) as its virtual
    token embeddings."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    m, d = prompt.shape
    with warnings.catch_warnings():  # peft's deprecation notices
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=m,
                                                              token_dim=d))
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(prompt)
    return peft_model.eval()


def save_artifact(folder: Path, backbone: Backbone, data: MemorizeData, prompt: torch.Tensor,
                  info: dict[str, Any]) -> None:
    """Write the three parts and ``memorize.json`` into ``folder`` (an empty folder from
    :func:`attnlab.core.outputs.artifact_dir`, which swaps it in whole)."""
    from safetensors.torch import save_file

    _quiet_hf()
    m = int(prompt.shape[0])
    model = to_gpt2(backbone, m).cpu()
    with warnings.catch_warnings():  # transformers' deprecation notices
        warnings.simplefilter("ignore")
        model.save_pretrained(folder / "backbone", safe_serialization=True)
    (folder / "data").mkdir()
    scored = data.targets != IGNORE
    save_file({"tokens": data.tokens.contiguous(), "targets": data.targets.contiguous(),
               "scored": scored.contiguous()}, str(folder / "data" / PARTS["data"]))
    atomic_write_json(folder / "data" / DATA_JSON, {
        "n_pairs": data.n_pairs, "seq_len": data.seq_len, "vocab": data.vocab, "n_classes": data.n_classes,
        "target": data.target, "rank": data.rank, "ignore_index": IGNORE, "n_targets": data.n_targets,
        "tensors": {"tokens": "(n_pairs, seq_len) int64 input token ids",
                    "targets": f"(n_pairs, seq_len) int64 token ids the model must predict, {IGNORE} elsewhere",
                    "scored": "(n_pairs, seq_len) bool, the positions whose targets are checked"}})
    prompted_model(model, prompt.detach().cpu().to(model.dtype)).save_pretrained(folder / "adapter")
    atomic_write_json(folder / INFO, {**info, "m": m, "criterion": "argmax over the whole vocabulary equals the "
                                      "target at every scored position of every example"})


def check_folder(folder: str | Path) -> Path:
    """``folder`` as a Path, or a one-line error naming what is missing."""
    folder = Path(folder)
    require(folder.is_dir(), f"{folder} is not a folder (give a folder written by `attnlab memorize search --save`)")
    for part, name in {**PARTS, ".": INFO}.items():
        path = folder / part / name
        require(path.is_file(), f"{folder} is not a saved memorizing prompt: {path.relative_to(folder)} is missing "
                                "(write one with `attnlab memorize search --save DIR`)")
    return folder


def load_data(folder: Path) -> dict[str, torch.Tensor]:
    """The saved tokens, targets and scored positions, checked against each other."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / "data" / PARTS["data"]
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise AttnlabError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None
    require({"tokens", "targets", "scored"} <= set(tensors), f"{path} needs tensors tokens, targets and scored")
    tokens, targets, scored = tensors["tokens"], tensors["targets"], tensors["scored"]
    require(tokens.ndim == 2 and tokens.shape == targets.shape == scored.shape and scored.dtype == torch.bool
            and torch.equal(scored, targets != IGNORE) and bool(scored.any()),
            f"{path}: tokens, targets and scored must be (n_pairs, seq_len), scored = targets != {IGNORE}, "
            "with at least one target")
    return tensors


def load_prompted(folder: Path, dtype: torch.dtype = torch.float64):
    """``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder/backbone), folder/adapter)`` in
    ``dtype``, in eval mode; a folder transformers or peft cannot read is a one-line error."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _quiet_hf()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            base = AutoModelForCausalLM.from_pretrained(folder / "backbone", dtype=dtype)
            model = PeftModel.from_pretrained(base, folder / "adapter")
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise AttnlabError(f"{folder}: the backbone or adapter does not load ({first[:160]})") from None
    return model.to(dtype).eval()


@torch.no_grad()
def teacher_forced(model, tokens: torch.Tensor) -> torch.Tensor:
    """Logits (B, L, vocab) at the input positions: one plain forward over [prompt; tokens], no KV cache."""
    return model(input_ids=tokens, use_cache=False).logits[:, -tokens.shape[1]:]


def score(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
    """Exactness by the whole-vocabulary argmax at the scored positions: exact, targets and examples reproduced,
    the smallest margin (target logit minus the best other logit; > 0 iff exact)."""
    scored = targets != IGNORE
    right = (logits.argmax(-1) == targets) & scored
    examples, _ = exact_match(logits, targets)
    margin = min_margin(logits, targets)
    return {"exact": bool(margin > 0), "targets_reproduced": int(right.sum()), "n_targets": int(scored.sum()),
            "examples_reproduced": round(examples * targets.shape[0]), "n_examples": int(targets.shape[0]),
            "min_margin": margin}


def verify(folder: str | Path) -> dict[str, Any]:
    """Re-check a saved folder in float64 with a plain forward of the PEFT-prompted HF model (no caching): the
    :func:`score` of its logits, and how many scored targets greedy ``generate`` (no cache) reproduces."""
    folder = check_folder(folder)
    tensors = load_data(folder)
    model = load_prompted(folder, torch.float64)
    vocab = model.get_input_embeddings().weight.shape[0]
    top = max(int(tensors["tokens"].max()), int(tensors["targets"].max()))
    require(top < vocab, f"{folder}: the data has token id {top} but the backbone's vocabulary has {vocab}")
    info = json.loads((folder / INFO).read_text(encoding="utf-8"))
    target = json.loads((folder / "data" / DATA_JSON).read_text(encoding="utf-8")).get("target")
    require(target in ("last", "every"), f"{folder}/data/{DATA_JSON}: 'target' must be 'last' or 'every'")
    tokens, targets = tensors["tokens"], tensors["targets"]
    result = score(teacher_forced(model, tokens), targets)
    out = generated(model, tokens, targets, target)
    want, scored = (targets, tensors["scored"]) if target == "every" else (targets[:, -1:], tensors["scored"][:, -1:])
    return {"folder": str(folder), "dtype": "float64", "m": info.get("m"), "target": target, **result,
            "generated_reproduced": int((out[scored] == want[scored]).sum())}


@torch.no_grad()
def generated(model, tokens: torch.Tensor, targets: torch.Tensor, target: str) -> torch.Tensor:
    """What transformers' greedy ``generate`` emits where ``targets`` are scored: for target="last" one token after
    each whole input; for "every" the seq_len tokens after each key token (the inputs are the previous targets).
    Without the KV cache: with transformers 5 (which passes the cache as ``cache``) peft 0.21 looks for
    ``past_key_values``, finds none and prepends the prompt again at every step."""
    kw = {"do_sample": False, "use_cache": False, "pad_token_id": 0}
    if target != "every":
        require(bool((targets[:, :-1] == IGNORE).all()), "target 'last' scores the last position only")
    with warnings.catch_warnings():  # "position ids are not supported": PEFT lets the model number the positions
        warnings.simplefilter("ignore")
        if target == "every":
            return model.generate(input_ids=tokens[:, :1], max_new_tokens=tokens.shape[1], **kw)[:, 1:]
        return model.generate(input_ids=tokens, max_new_tokens=1, **kw)[:, -1:]
