"""Calibration and evaluation text as fixed-length token blocks ("pt" mode, as the official code): documents are
tokenized, joined with the end-of-text token and cut into blocks of ``seq_len``; no padding anywhere.

Documents are taken in an order shuffled by a seed, so a token budget smaller than the split samples it
across all its documents rather than its first ones; the record says which documents were used (their
hashes), so ``eval`` can refuse held-out text that overlaps them."""

from __future__ import annotations

import numpy as np
import torch

from ..core.errors import AttnlabError
from ..core.text import describe, document_hash, load_texts


def text_blocks(tokenizer, texts: list[str], seq_len: int, max_tokens: int | None) -> tuple[torch.Tensor, dict]:
    """(n_blocks, seq_len) token ids of ``texts`` in order, each followed by the end-of-text token, up to
    ``max_tokens`` (all when None), and their record: token count, ``seq_len`` and the hashes of the documents
    tokenized for them (conservatively: the last may be in the blocks only in part, or not at all when the cut
    at a block boundary drops its tokens)."""
    if seq_len < 2:
        raise AttnlabError(f"seq_len must be at least 2, got {seq_len}")
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    ids: list[int] = []
    used = 0
    for text in texts:
        if max_tokens is not None and len(ids) >= max_tokens:
            break
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if sep is not None:
            ids.append(sep)
        used += 1
    n_blocks = (min(len(ids), max_tokens) if max_tokens else len(ids)) // seq_len
    if n_blocks == 0 or (max_tokens is not None and len(ids) < max_tokens):
        raise AttnlabError(f"the text has {len(ids)} tokens, fewer than the {max_tokens or seq_len} requested "
                           f"(ask for fewer --tokens or give more text)")
    blocks = torch.tensor(ids[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)
    return blocks, {"tokens": int(blocks.numel()), "seq_len": seq_len,
                    "documents_used": [document_hash(t) for t in texts[:used]]}


def shuffled(texts: list[str], seed: int) -> list[str]:
    """``texts`` in the order a seeded permutation gives (numpy's PCG64: the same on every machine)."""
    return [texts[i] for i in np.random.default_rng(seed).permutation(len(texts))]


def blocks_from_source(tokenizer, source: str, split: str, seq_len: int, max_tokens: int | None,
                       seed: int = 0) -> tuple[torch.Tensor, dict]:
    """:func:`text_blocks` of ``split`` of a text source (see :func:`attnlab.core.text.load_texts`), its
    documents in the order ``seed`` shuffles them; the record adds the source's description and the seed."""
    docs = load_texts(source, split)
    blocks, used = text_blocks(tokenizer, shuffled(docs, seed), seq_len, max_tokens)
    return blocks, {**describe(source, split, docs), "seed": seed, **used}
