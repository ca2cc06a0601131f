"""Calibration and evaluation text as fixed-length token blocks ("pt" mode, as the official code): documents are
tokenized, joined with the end-of-text token and cut into blocks of ``seq_len``; no padding anywhere."""

from __future__ import annotations

import torch

from ..core.errors import AttnlabError
from ..core.text import describe, load_texts


def token_blocks(tokenizer, texts: list[str], seq_len: int, max_tokens: int | None) -> torch.Tensor:
    """(n_blocks, seq_len) token ids holding the first ``max_tokens`` tokens of ``texts`` (all when None)."""
    if seq_len < 2:
        raise AttnlabError(f"seq_len must be at least 2, got {seq_len}")
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if sep is not None:
            ids.append(sep)
        if max_tokens is not None and len(ids) >= max_tokens:
            break
    n_blocks = (min(len(ids), max_tokens) if max_tokens else len(ids)) // seq_len
    if n_blocks == 0 or (max_tokens is not None and len(ids) < max_tokens):
        raise AttnlabError(f"the text has {len(ids)} tokens, fewer than the {max_tokens or seq_len} requested "
                           f"(ask for fewer --tokens or give more text)")
    return torch.tensor(ids[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)


def blocks_from_source(tokenizer, source: str, split: str, seq_len: int,
                       max_tokens: int | None) -> tuple[torch.Tensor, dict]:
    """Token blocks from a text source (see :func:`attnlab.core.text.load_texts`) and their description."""
    blocks = token_blocks(tokenizer, load_texts(source, split), seq_len, max_tokens)
    info = describe(source, split)
    info.update(tokens=int(blocks.numel()), seq_len=seq_len)
    return blocks, info
