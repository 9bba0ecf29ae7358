"""The decoding step's attention as a Triton kernel: one query per (row, kv head) sequence over that row's own
keys in the slot cache, split along the keys and combined (the flash-decoding scheme) while sequences are too
few to fill the GPU, in one pass that writes the output itself when they are not.

Why not flash attention's variable-length kernel for this step: it tiles queries by 128 rows, so a step with
one query per sequence computes 128 rows to keep one. On the H200 that made a 13B decoding step's attention
compute-bound (289 us a layer for 128 rows of ~470 keys: 1.40 s of a 4.4 s run, twice the time its key and
value reads take at the copy bandwidth). Here the query tile is the kv head's query group padded to 16 rows
(the smallest ``tl.dot``), and a sequence's keys may be split over several programs when there are few
sequences.

Layouts are those of ``harness.models.varlen``: ``q [sequences, groups, head_dim]``; keys and values the slot
cache's buffers flattened to ``[sequences * capacity, head_dim]`` (sequence ``s`` = slot * kv_heads + head
starts at row ``s * capacity``); ``used [sequences]`` int32. Runs on a GPU, and on a CPU in Triton's
interpreter (``TRITON_INTERPRET=1``), which the tests use.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

BLOCK_N = 64  # keys per tile
GROUP_ROWS = 16  # a query tile's rows: the kv head's query group, padded (tl.dot needs 16)
TARGET_PROGRAMS = 2048  # split each sequence's keys until there are about this many programs
MAX_SPLITS = 16  # a runtime argument up to this: a new split count compiles nothing (compaction changes it)

_kernels: Any = None


@functools.cache
def available() -> bool:
    """Triton importable (the GPU image has it; a CPU install need not)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def supports(groups: int, dim: int) -> bool:
    """Query heads per kv head up to a tile's rows, and a power-of-two head size of 16 or more."""
    return groups <= GROUP_ROWS and dim >= 16 and not dim & (dim - 1)


def splits_for(sequences: int) -> int:
    """Programs per sequence: 1 when the sequences alone make ``TARGET_PROGRAMS`` programs (no combining pass:
    on the H200 the combine took 30 us a layer of a 13B step at 147 rows, 1.2 ms of a 23 ms step), else 2 or more
    while there are fewer programs than that (a power of 2)."""
    if sequences >= TARGET_PROGRAMS:
        return 1
    splits = 2
    while splits < MAX_SPLITS and sequences * splits < TARGET_PROGRAMS:
        splits *= 2
    return splits


def _build() -> Any:
    import triton
    import triton.language as tl

    # no specialisation on the split count: it changes as the batch is compacted, and each value would compile
    @triton.jit(do_not_specialize=["splits"])
    def split_kernel(Q, K, V, Used, Acc, Max, Sum, Out, scale, capacity, groups, splits,
                     BLOCK: tl.constexpr, G: tl.constexpr, D: tl.constexpr, WHOLE: tl.constexpr):
        seq = tl.program_id(0)
        split = tl.program_id(1)
        used = tl.load(Used + seq)
        per = ((used + splits - 1) // splits + BLOCK - 1) // BLOCK * BLOCK  # whole tiles per split
        start = split * per
        end = tl.minimum(start + per, used)
        g = tl.arange(0, G)
        d = tl.arange(0, D)
        real = g < groups
        q = tl.load(Q + (seq * groups + g[:, None]) * D + d[None, :], mask=real[:, None], other=0.0)
        m_i = tl.full([G], float("-inf"), tl.float32)
        l_i = tl.zeros([G], tl.float32)
        acc = tl.zeros([G, D], tl.float32)
        base = seq.to(tl.int64) * capacity * D
        for n0 in range(start, end, BLOCK):
            n = n0 + tl.arange(0, BLOCK)
            valid = n < end
            k = tl.load(K + base + n[:, None] * D + d[None, :], mask=valid[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k)) * scale
            s = tl.where(valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(V + base + n[:, None] * D + d[None, :], mask=valid[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        if WHOLE:  # one split: this program saw every key, so it normalises and writes the output
            out = acc / tl.where(real, l_i, 1.0)[:, None]
            tl.store(Out + (seq * groups + g[:, None]) * D + d[None, :], out.to(Out.dtype.element_ty),
                     mask=real[:, None])
        else:
            part = (seq * splits + split) * groups + g  # [sequences, splits, groups]
            tl.store(Max + part, m_i, mask=real)
            tl.store(Sum + part, l_i, mask=real)
            tl.store(Acc + part[:, None] * D + d[None, :], acc, mask=real[:, None])

    @triton.jit(do_not_specialize=["splits"])
    def combine_kernel(Acc, Max, Sum, Out, groups, splits, MAX: tl.constexpr, G: tl.constexpr, D: tl.constexpr):
        seq = tl.program_id(0)
        g = tl.arange(0, G)
        d = tl.arange(0, D)
        sp = tl.arange(0, MAX)
        real = g < groups
        here = (sp[:, None] < splits) & real[None, :]  # [MAX, G]
        part = (seq * splits + sp[:, None]) * groups + g[None, :]
        m = tl.load(Max + part, mask=here, other=float("-inf"))
        l = tl.load(Sum + part, mask=here, other=0.0)  # noqa: E741
        top = tl.max(m, 0)
        top = tl.where(real, top, 0.0)  # a padding row has no split: keep its arithmetic finite
        w = tl.exp(m - top[None, :])  # an empty split: its max is -inf, its weight 0
        denom = tl.sum(w * l, 0)
        acc = tl.load(Acc + part[:, :, None] * D + d[None, None, :], mask=here[:, :, None], other=0.0)
        out = tl.sum(acc * w[:, :, None], 0) / tl.where(real, denom, 1.0)[:, None]
        tl.store(Out + (seq * groups + g[:, None]) * D + d[None, :], out.to(Out.dtype.element_ty), mask=real[:, None])

    return split_kernel, combine_kernel


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, used: torch.Tensor, capacity: int,
                     scale: float) -> torch.Tensor:
    """Attention of each sequence's query group over its first ``used`` keys: ``[sequences, groups, head_dim]``."""
    import torch

    global _kernels
    if _kernels is None:
        _kernels = _build()
    split_kernel, combine_kernel = _kernels
    sequences, groups, dim = q.shape
    if not supports(groups, dim):
        raise ValueError(f"decode kernel: {groups} query heads per kv head and head_dim {dim} are not supported")
    splits = splits_for(sequences)
    out = torch.empty_like(q)
    if splits == 1:
        split_kernel[(sequences, 1)](q, k, v, used, out, out, out, out, scale, capacity, groups, 1,
                                     BLOCK=BLOCK_N, G=GROUP_ROWS, D=dim, WHOLE=True)
        return out
    acc = torch.empty((sequences, splits, groups, dim), dtype=torch.float32, device=q.device)
    top = torch.empty((sequences, splits, groups), dtype=torch.float32, device=q.device)
    total = torch.empty_like(top)
    split_kernel[(sequences, splits)](q, k, v, used, acc, top, total, out, scale, capacity, groups, splits,
                                      BLOCK=BLOCK_N, G=GROUP_ROWS, D=dim, WHOLE=False)
    # the combine holds [MAX_SPLITS, G, D] in registers: G only as wide as the group (a 16-row G took 118 us a
    # 13B layer on the H200, more than the split kernel)
    combine_kernel[(sequences,)](acc, top, total, out, groups, splits, MAX=MAX_SPLITS,
                                 G=max(2, 1 << (groups - 1).bit_length()), D=dim)
    return out
