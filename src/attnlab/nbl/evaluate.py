"""How much a linearized model differs from the original, on held-out text disjoint from calibration:
perplexity, top-1 next-token agreement and greedy-continuation agreement. A linearized model is scored
only against its own base and on text without its calibration documents (:func:`check_integrity`)."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
from tqdm import tqdm

from ..core.errors import AttnlabError


@dataclass
class Outputs:
    """What comparisons need from one model on a set of blocks: summed NLL and argmax next tokens."""

    nll: float
    top1: torch.Tensor  # (positions,) argmax predictions, in block order
    count: int


@torch.no_grad()
def outputs(model, blocks: torch.Tensor, batch_size: int = 8, progress: bool = False) -> Outputs:
    nll, tops = 0.0, []
    for b in tqdm(range(0, len(blocks), batch_size), desc="evaluate", disable=not progress):
        batch = blocks[b:b + batch_size].to(model.device)
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float().reshape(-1, model.config.vocab_size)
        nll += torch.nn.functional.cross_entropy(logits, batch[:, 1:].reshape(-1), reduction="sum").item()
        tops.append(logits.argmax(-1).cpu())
    top1 = torch.cat(tops)
    return Outputs(nll, top1, top1.numel())


def perplexity(model, blocks: torch.Tensor, batch_size: int = 8, progress: bool = False) -> float:
    """exp(mean next-token NLL) over every position of every block."""
    out = outputs(model, blocks, batch_size, progress)
    return math.exp(out.nll / out.count)


def compare(model, reference, blocks: torch.Tensor, batch_size: int = 8, progress: bool = False) -> dict[str, float]:
    """Perplexity of both models and the share of positions where their argmax next token agrees.
    ``reference`` is a model or its precomputed :class:`Outputs` on the same blocks."""
    ref = reference if isinstance(reference, Outputs) else outputs(reference, blocks, batch_size, progress)
    out = outputs(model, blocks, batch_size, progress)
    return {"perplexity": math.exp(out.nll / out.count), "reference_perplexity": math.exp(ref.nll / ref.count),
            "top1_agreement": float((out.top1 == ref.top1).float().mean()), "eval_tokens": out.count}


@torch.no_grad()
def greedy_agreement(model, reference, prompts: torch.Tensor, new_tokens: int = 32) -> dict[str, float]:
    """Greedy continuations of each prompt row by both models: the mean share of positions that match,
    and the mean length of the common prefix as a share of ``new_tokens``."""
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    a = model.generate(prompts.to(model.device), **kw)[:, prompts.shape[1]:].cpu()
    b = reference.generate(prompts.to(reference.device), **kw)[:, prompts.shape[1]:].cpu()
    same = (a == b).float()
    prefix = same.cumprod(dim=1).sum(dim=1)
    return {"greedy_match": float(same.mean()), "greedy_prefix": float(prefix.mean() / new_tokens)}


@torch.no_grad()
def compare_encoder(model, reference, blocks: torch.Tensor, batch_size: int = 8) -> dict[str, float]:
    """For encoders (no next-token head): mean cosine and relative squared error of the last hidden states."""
    cos, err, ref_norm, count = 0.0, 0.0, 0.0, 0
    for b in range(0, len(blocks), batch_size):
        batch = blocks[b:b + batch_size].to(model.device)
        h = model(input_ids=batch).last_hidden_state.double()
        r = reference(input_ids=batch).last_hidden_state.double()
        cos += float(torch.nn.functional.cosine_similarity(h, r, dim=-1).sum())
        err += float(((h - r) ** 2).sum())
        ref_norm += float((r**2).sum())
        count += h.shape[0] * h.shape[1]
    return {"hidden_cosine": cos / count, "hidden_nmse": err / ref_norm, "eval_tokens": count}


def check_integrity(record: dict | None, reference, heldout: dict, name: str = "the model") -> None:
    """Refuse (one line) to score a linearized model whose ``nbl.json`` ``record`` names another base than
    ``reference`` (a :class:`~attnlab.nbl.session.Session`), or on ``heldout`` text (a blocks record) that
    holds any of its calibration documents. A record without these fields (an older attnlab, or a fit on
    token ids) is scored with one warning line saying what could not be checked."""
    if record is None:
        return
    from .stats import fingerprint

    unchecked = []
    identity = record.get("base_identity")
    if identity is None:
        unchecked.append("its base model")
    elif identity != (found := fingerprint(reference.model, portable=True)):
        raise AttnlabError(f"{name} was linearized from another base model (recorded identity {identity}, "
                           f"--against {reference.spec} has {found}); evaluate against the model it was made from")
    calibration = (record.get("calibration") or {}).get("documents_used")
    if calibration is None:
        unchecked.append("that the held-out text is not calibration text")
    elif overlap := set(heldout["documents_used"]) & set(calibration):
        raise AttnlabError(f"{len(overlap)} of the {len(heldout['documents_used'])} held-out documents of "
                           f"{heldout['source']} were calibration documents of {name}; evaluate on text it was not "
                           f"calibrated on (the held-out split of its calibration source is disjoint)")
    if unchecked:
        print(f"attnlab: warning: {name}'s nbl.json does not record what is needed to check "
              f"{' or '.join(unchecked)} (written by an older attnlab or fitted on token ids)", file=sys.stderr)


def evaluate_pair(candidate, reference, source: str, tokens: int, seq_len: int, batch_size: int = 8,
                  greedy_tokens: int = 32, progress: bool = True, split: str = "heldout",
                  record: dict | None = None) -> dict:
    """Everything `attnlab nbl eval` reports, on ``split`` of ``source`` (the held-out split: disjoint from
    calibration documents; ``all``: a source never calibrated on), after :func:`check_integrity` of the
    candidate's ``record``.

    ``candidate`` and ``reference`` are :class:`~attnlab.nbl.session.Session` objects."""
    from ..core.hf import family_of
    from .replace import replaced_layers

    blocks, info = reference.blocks(source, split, tokens, seq_len)
    check_integrity(record, reference, info, candidate.spec)
    result = {"replaced": replaced_layers(candidate.model), "heldout": info}
    if not family_of(reference.model).causal:
        result.update(compare_encoder(candidate.model, reference.model, blocks, batch_size))
        return result
    result.update(compare(candidate.model, reference.model, blocks, batch_size, progress))
    result["perplexity_increase"] = result["perplexity"] / result["reference_perplexity"] - 1
    if greedy_tokens:
        prompts = blocks[: min(8, len(blocks)), :32]
        result.update(greedy_agreement(candidate.model, reference.model, prompts, greedy_tokens))
    return result
