"""Native executors: the ``table`` and ``kv`` loops of :mod:`.executors` compiled with numba (registered as
``table-native`` and ``kv-native``).

They are the same algorithms on the same derived data (the certified table; the cached FFN pieces) with the
ring held in an int32 array: the pure-Python classes stay the readable reference and the tests hold the two
equal token for token. ``table-native`` refuses an incomplete certificate exactly as ``table`` does (it is a
subclass and runs the same constructor).

JIT: the kernels are compiled on first use with explicit signatures and cached on disk (numba's cache) under
``$NUMBA_CACHE_DIR``, else ``<attnlab cache>/numba`` (:func:`attnlab.core.models.cache_dir`), so a CLI run
loads them instead of recompiling; a cache directory that cannot be written only costs the compile.
:data:`COMPILE_SECONDS` records how long the first use took (compile, or load from the cache), apart from
any run's rate.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import AttnlabError
from .certificate import Certificate
from .compile import CompiledTransformer
from .executors import KVExecutor, TableExecutor

#: seconds the first use of each kernel took ("table", "kv"): a compile, or a load from numba's cache (numba's
#: own import is not included)
COMPILE_SECONDS: dict[str, float] = {}
_KERNELS: dict[str, Any] = {}


def numba_cache_dir() -> Path:
    """Where numba caches the compiled kernels: ``$NUMBA_CACHE_DIR``, else ``<attnlab cache>/numba``."""
    from ..core.models import cache_dir

    return Path(os.environ.get("NUMBA_CACHE_DIR") or cache_dir() / "numba")


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def _table_loop(nxt, vocab, ring, marks, pos, cur, count, max_tokens):  # pragma: no cover (compiled)
    """TableExecutor.advance: cur = T[cur][oldest token] (T flattened, V x V), written over the oldest slot."""
    w = ring.shape[0]
    n = 0
    seen = 0
    row = cur * vocab
    while n < max_tokens:
        cur = nxt[row + ring[pos]]
        row = cur * vocab
        ring[pos] = cur
        pos += 1
        if pos == w:
            pos = 0
        n += 1
        mark = marks[cur]
        if mark:
            seen += 1
            if mark == 2 or seen == count:
                break
    return n, seen, pos, cur


def _kv_loop(unit_start, unit_id, unit_a, front_pre, unit_token, ring, marks, pos, cur, count,
             max_tokens):  # pragma: no cover (compiled)
    """KVExecutor.advance: the oldest slot's cached FFN input, the first AND unit that fires (lemma C).
    Returns n = -1 - (tokens before the failure) when no unit fires (not a compiled network)."""
    w = ring.shape[0]
    n = 0
    seen = 0
    while n < max_tokens:
        front = ring[pos]
        nxt = -1
        for i in range(unit_start[cur], unit_start[cur + 1]):
            u = unit_id[i]
            if unit_a[i] + front_pre[front, u] > 0:
                nxt = unit_token[u]
                break
        if nxt < 0:
            return -1 - n, seen, pos, cur
        cur = nxt
        ring[pos] = cur
        pos += 1
        if pos == w:
            pos = 0
        n += 1
        if marks[cur]:
            seen += 1
            if marks[cur] == 2 or seen == count:
                break
    return n, seen, pos, cur


_SIGNATURES = {
    "table": "UniTuple(int64, 4)(int32[::1], int64, int32[::1], uint8[::1], int64, int64, int64, int64)",
    "kv": "UniTuple(int64, 4)(int64[::1], int32[::1], int32[::1], int32[:, ::1], int32[::1], int32[::1], "
          "uint8[::1], int64, int64, int64, int64)",
}
_LOOPS = {"table": _table_loop, "kv": _kv_loop}


def kernel(name: str):
    """The compiled loop ``name`` ("table" or "kv"), compiled (or loaded from numba's cache) on first use."""
    if name in _KERNELS:
        return _KERNELS[name]
    cache = numba_cache_dir()
    use_cache = _writable(cache)
    if use_cache:
        os.environ.setdefault("NUMBA_CACHE_DIR", str(cache))  # read when numba is first imported
    try:
        import numba
    except ImportError:
        raise AttnlabError(f"--executor {name}-native needs numba (pip install numba), or use --executor "
                           f"{name}") from None
    t0 = time.perf_counter()
    try:
        fn = numba.njit(_SIGNATURES[name], cache=use_cache, nogil=True)(_LOOPS[name])
    except RuntimeError:  # numba finds no cache locator it can write: compile without the cache
        fn = numba.njit(_SIGNATURES[name], cache=False, nogil=True)(_LOOPS[name])
    COMPILE_SECONDS[name] = time.perf_counter() - t0
    _KERNELS[name] = fn
    return fn


class _NativeRing:
    """The ring as an int32 array (the pure-Python executors keep a list)."""

    def _native_ring(self) -> None:
        self.ring = np.asarray(self.ring, dtype=np.int32)
        self.marks_arr = np.frombuffer(self.marks, dtype=np.uint8).copy()

    def window(self) -> list[int]:
        return np.concatenate([self.ring[self.pos:], self.ring[:self.pos]]).tolist()

    def _finish(self, n: int, seen: int, pos: int, cur: int) -> int:
        self.pos, self.cur, self.tokens = int(pos), int(cur), self.tokens + int(n)
        self.halted = self.marks[self.cur] == 2
        return int(seen)


class NativeTableExecutor(_NativeRing, TableExecutor):
    name = "table-native"

    def __init__(self, model: CompiledTransformer, prompt: Sequence[int], marks: Sequence[int],
                 certificate: Certificate | None = None):
        super().__init__(model, prompt, marks, certificate)  # refuses an incomplete certificate
        # indexed by the front *token*, flattened (V * V int32: within compile's size limit, which bounds the
        # certificate's V |Λ| x V float64 logits): one load per token, no symbol lookup
        self.next_arr = np.array(self.next, dtype=np.int32).ravel()
        self._native_ring()
        self.loop = kernel("table")

    def advance(self, count: int, max_tokens: int) -> int:
        if self.halted:
            return 0
        return self._finish(*self.loop(self.next_arr, self.model.vocab_size, self.ring, self.marks_arr, self.pos,
                                       self.cur, count, max_tokens))


class NativeKVExecutor(_NativeRing, KVExecutor):
    name = "kv-native"

    def __init__(self, model: CompiledTransformer, prompt: Sequence[int], marks: Sequence[int]):
        super().__init__(model, prompt, marks)  # checks the weights are the compiled form
        # cur_units as CSR: token t's candidate units are unit_id[unit_start[t]:unit_start[t + 1]]
        counts = [len(units) for units in self.cur_units]
        self.unit_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        flat = [pair for units in self.cur_units for pair in units]
        self.unit_id = np.array([u for u, _ in flat], dtype=np.int32)
        self.unit_a = np.array([a for _, a in flat], dtype=np.int32)
        self.front_arr = np.array(self.front_pre, dtype=np.int32).reshape(model.vocab_size, -1)
        self.unit_arr = np.array(self.unit_token, dtype=np.int32)
        self._native_ring()
        self.loop = kernel("kv")

    def advance(self, count: int, max_tokens: int) -> int:
        if self.halted:
            return 0
        n, seen, pos, cur = self.loop(self.unit_start, self.unit_id, self.unit_a, self.front_arr, self.unit_arr,
                                      self.ring, self.marks_arr, self.pos, self.cur, count, max_tokens)
        if n < 0:
            self._finish(-1 - n, seen, pos, cur)
            raise AttnlabError(f"kv executor: no FFN unit fired after token {cur} (not a compiled network)")
        return self._finish(n, seen, pos, cur)
