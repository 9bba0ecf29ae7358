"""Variable-length attention over the engine's slot cache: each row reads its own keys, no more.

Why: with ``sdpa`` a decoding step attends over the first ``window`` columns of every slot (the longest live
row) behind a mask, so a 13B step reads the keys of the longest row once per row, and every new window is a
new CUDA graph to record (10 recordings in a 114-step run, each costing two eager steps). Flash attention's
variable-length kernel takes each sequence's start and used length instead (``seqused_k``), so a step reads
each row's own keys, needs no mask, and one recorded graph serves a whole pass.

The slot cache's layout is ``[slots, kv_heads, capacity, head_dim]``. Flattened, that is one key per
(slot, kv head, column), so every (row, kv head) pair is one sequence of the kernel with a single key head,
starting at ``(slot * kv_heads + head) * capacity`` and ``used`` columns long; its query heads are the
``groups`` query heads that share that kv head (grouped-query attention as the kernel's multi-query case).
No copy of the cache is made.

* Decoding: one query per row; sequence ``slot * kv_heads + head``.
* Prefill (``Packed``): the new tokens of several rows in one sequence of ``T`` tokens (no padding); their
  keys and values are written straight into their slots (the reused prefix was copied there first), and
  each (row, kv head) sequence is causal within the row: query ``i`` of ``n`` sees columns up to
  ``used - n + i`` (the kernel aligns causal masks bottom-right).

On a GPU the kernel is flash attention through ``torch.ops.aten._flash_attention_forward`` (CUDA, fp16/bf16,
head_dim <= 256). ``reference_kernel`` computes the same with ``sdpa`` one sequence at a time: the CPU tests
drive the engine's whole varlen path through it and compare with the masked path.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.models.transfer import to_device

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

NAME = "txt2sql_varlen"  # the name the attention function is registered under in transformers


@dataclass
class Packed:
    """The token layout of a packed prefill: which slot and column each of the ``T`` new tokens goes to, and
    the gather that orders the queries by (row, kv head, token)."""

    token_rows: torch.Tensor  # [T] the slot of each token
    token_cols: torch.Tensor  # [T] its column in the slot (= its position id)
    query_tokens: torch.Tensor  # [T * kv_heads] the token of each query, ordered by (row, kv head, token)
    query_heads: torch.Tensor  # [T * kv_heads] the kv head of each query, same order
    gather: torch.Tensor | None = None  # gather_index, once per forward
    place: torch.Tensor | None = None  # place_index, likewise

    def gather_index(self, groups: int) -> torch.Tensor:
        """Rows of a layer's queries viewed as ``[heads * T, head_dim]``, in the kernel's order (query, group)."""
        import torch

        tokens = self.token_rows.shape[0]
        group = torch.arange(groups, device=self.query_heads.device)
        return ((self.query_heads[:, None] * groups + group[None, :]) * tokens + self.query_tokens[:, None]).reshape(-1)

    def place_index(self, kv_heads: int) -> torch.Tensor:
        """Rows of the output viewed as ``[T * kv_heads, groups * head_dim]`` for each query, kernel order."""
        return self.query_tokens * kv_heads + self.query_heads


@dataclass
class VarlenBatch:
    """What one forward's attention reads. ``cu_q``/``cu_k`` are int32 offsets of each (row, kv head)
    sequence's queries and keys, ``used_k`` each sequence's key count (int32); ``packed`` is None for a
    decoding step (one query per slot, every slot a row), whose attention runs the Triton kernel when
    ``triton`` (``decodes_with_triton``, decided once per pass)."""

    cu_q: torch.Tensor
    cu_k: torch.Tensor
    used_k: torch.Tensor
    max_q: int
    max_k: int
    packed: Packed | None = None
    triton: bool = False


Kernel = Callable[..., "torch.Tensor"]


def flash_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
                 used_k: torch.Tensor, max_q: int, max_k: int, causal: bool, scale: float) -> torch.Tensor:
    """Flash attention's variable-length forward: ``q [total_q, groups, D]``, ``k``/``v [total_k, 1, D]``."""
    import torch

    return torch.ops.aten._flash_attention_forward(q, k, v, cu_q, cu_k, max_q, max_k, 0.0, causal, False,
                                                   scale=scale, seqused_k=used_k)[0]


def reference_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
                     used_k: torch.Tensor, max_q: int, max_k: int, causal: bool, scale: float) -> torch.Tensor:
    """What ``flash_kernel`` computes, one sequence at a time with ``sdpa`` (any device, any dtype; slow)."""
    import torch

    out = torch.empty_like(q)
    cq, ck, used = cu_q.tolist(), cu_k.tolist(), used_k.tolist()
    for b, m in enumerate(used):
        lo, hi = cq[b], cq[b + 1]
        n = hi - lo
        if n == 0:
            continue
        qs = q[lo:hi].transpose(0, 1)[None]  # [1, groups, n, D]
        ks = k[ck[b]:ck[b] + m, 0][None, None].expand(1, qs.shape[1], m, -1)
        vs = v[ck[b]:ck[b] + m, 0][None, None].expand(1, qs.shape[1], m, -1)
        mask = None
        if causal:  # bottom-right: query i of n sees keys up to m - n + i
            mask = torch.arange(m, device=q.device)[None, :] <= (m - n + torch.arange(n, device=q.device))[:, None]
        o = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, scale=scale)
        out[lo:hi] = o[0].transpose(0, 1)
    return out


_active: VarlenBatch | None = None
_kernel: Kernel = flash_kernel
# The decoding step's kernel: "auto" = the Triton kernel of harness.models.decode_kernel on a GPU where Triton
# is installed, else the varlen kernel above; "triton" or "flash" to pin one (the benchmark compares them).
DECODE_KERNELS = ("auto", "triton", "flash")
_decode_choice = "auto"


def choose_decode_kernel(name: str) -> str:
    """Pin the decoding step's kernel (one of ``DECODE_KERNELS``); returns the previous choice."""
    global _decode_choice
    if name not in DECODE_KERNELS:
        raise ValueError(f"decode kernel {name!r}: expected one of {', '.join(DECODE_KERNELS)}")
    before, _decode_choice = _decode_choice, name
    return before


def decodes_with_triton(model: Any) -> bool:
    """Whether this model's decoding steps run the Triton kernel (on its device, with its head shapes)."""
    from harness.models.engine import head_shape

    shape = head_shape(model.config)
    device = getattr(model, "device", None)
    return _triton_decoding(device.type if device is not None else "cpu", shape.heads // shape.kv_heads,
                            shape.head_dim)


def _triton_decoding(device_type: str, groups: int, head_dim: int) -> bool:
    from harness.models import decode_kernel

    if _decode_choice == "flash" or not decode_kernel.supports(groups, head_dim):
        return False
    return _decode_choice == "triton" or (device_type == "cuda" and decode_kernel.available())


def attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: Any, scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """The attention function registered as ``NAME``: ``key``/``value`` are the slot cache's whole buffers
    ``[slots, kv_heads, capacity, head_dim]``, the batch in force says which columns each row reads."""
    batch = _active
    if batch is None:
        raise RuntimeError("varlen attention called outside the engine's forward")  # a bug, not a user error
    heads, head_dim = query.shape[1], query.shape[3]
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    k, v = key.reshape(-1, 1, head_dim), value.reshape(-1, 1, head_dim)
    scale = scaling if scaling is not None else head_dim ** -0.5
    if batch.packed is None:  # decoding: [slots, heads, 1, D], sequence slot * kv_heads + head
        slots = query.shape[0]
        q = query.reshape(slots * kv_heads, groups, head_dim)
        if batch.triton:
            from harness.models.decode_kernel import decode_attention

            out = decode_attention(q, key, value, batch.used_k, key.shape[2], scale)
        else:
            out = _kernel(q, k, v, batch.cu_q, batch.cu_k, batch.used_k, 1, batch.max_k, False, scale)
        return out.reshape(slots, 1, heads, head_dim), None
    import torch

    p = batch.packed
    tokens = query.shape[2]  # [1, heads, T, D]
    if p.gather is None or p.place is None:  # the same for every layer of the forward
        p.gather, p.place = p.gather_index(groups), p.place_index(kv_heads)
    q = query[0].reshape(heads * tokens, head_dim).index_select(0, p.gather).view(-1, groups, head_dim)
    out = _kernel(q, k, v, batch.cu_q, batch.cu_k, batch.used_k, batch.max_q, batch.max_k, True, scale)
    placed = torch.empty((tokens * kv_heads, groups * head_dim), dtype=out.dtype, device=out.device)
    placed.index_copy_(0, p.place, out.reshape(-1, groups * head_dim))
    return placed.view(1, tokens, heads, head_dim), None


def register() -> None:
    """Register ``attention`` with transformers under ``NAME`` (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, attention)


@contextlib.contextmanager
def active(model: Any, batch: VarlenBatch) -> Iterator[None]:
    """Inside: the model's attention layers run ``attention`` with ``batch``; no mask is built (transformers
    builds none for an attention function without a mask function of its own)."""
    global _active
    config = model.config
    before = config._attn_implementation
    _active = batch
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = before
        _active = None


def use_kernel(kernel: Kernel) -> Kernel:
    """Set the kernel ``attention`` calls; returns the previous one (the CPU tests use ``reference_kernel``)."""
    global _kernel
    before, _kernel = _kernel, kernel
    return before


def flash_usable(model: Any) -> bool:
    """True when flash attention's variable-length kernel can serve this model: CUDA, fp16/bf16, a head size
    it supports, and a trial call that works (an older torch or GPU fails it, and the engine keeps sdpa)."""
    import torch

    device = getattr(model, "device", None)
    if device is None or device.type != "cuda" or model.dtype not in (torch.float16, torch.bfloat16):
        return False
    from harness.models.engine import head_shape

    head_dim = head_shape(model.config).head_dim
    if head_dim > 256 or head_dim % 8:
        return False
    try:
        q = torch.zeros((2, 2, head_dim), dtype=model.dtype, device=device)
        kv = torch.zeros((8, 1, head_dim), dtype=model.dtype, device=device)
        cu = torch.tensor([0, 1, 2], dtype=torch.int32, device=device)
        flash_kernel(q, kv, kv, cu, cu * 4, cu[1:].clone(), 1, 4, False, 1.0)
    except Exception as exc:  # noqa: BLE001 - any failure means: not on this machine
        log.warning("flash attention's variable-length kernel is not usable here (%s: %s); decoding with sdpa",
                    type(exc).__name__, exc)
        return False
    return True


def decode_batch(slots: int, kv_heads: int, capacity: int, device: Any, triton: bool = False) -> VarlenBatch:
    """The fixed part of a decoding step's batch (``used_k`` is set per step from the positions)."""
    import torch

    seqs = slots * kv_heads
    cu_q = torch.arange(seqs + 1, dtype=torch.int32, device=device)
    return VarlenBatch(cu_q=cu_q, cu_k=cu_q * capacity, used_k=torch.ones(seqs, dtype=torch.int32, device=device),
                       max_q=1, max_k=capacity, triton=triton)


def used_for_decoding(pos: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """Each (slot, kv head) sequence's key count in a decoding step: its row's position + 1 (the new key
    included), int32 (inside a recorded step: no host sync)."""
    import torch

    # contiguous, as the kernel requires (one slot: a reshape of the expansion would be a stride-0 view)
    return (pos + 1).to(torch.int32)[:, None].expand(-1, kv_heads).contiguous().view(-1)


def prefill_batch(slots: Sequence[int], starts: Sequence[int], lengths: Sequence[int], kv_heads: int,
                  capacity: int, device: Any) -> VarlenBatch:
    """A packed prefill of rows whose prompts fill ``lengths[r]`` columns of slot ``slots[r]``, of which
    columns ``starts[r] ..`` are computed now (the earlier ones were copied from the prefix cache)."""
    import torch

    new = [n - s for n, s in zip(lengths, starts, strict=True)]
    offsets = [0]
    for n in new:
        offsets.append(offsets[-1] + n)
    token_rows = torch.tensor([s for s, n in zip(slots, new, strict=True) for _ in range(n)], dtype=torch.long)
    token_cols = torch.cat([torch.arange(s, n) for s, n in zip(starts, lengths, strict=True)])
    # queries ordered by (row, kv head, token): row r's sequence for head h holds its tokens offsets[r] ..
    query_tokens = torch.cat([torch.arange(offsets[r], offsets[r + 1]).repeat(kv_heads) for r in range(len(new))])
    query_heads = torch.cat([torch.arange(kv_heads).repeat_interleave(n) for n in new])
    cu_q = torch.tensor([0] + [n for n in new for _ in range(kv_heads)], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    # starts in the flattened cache; ascending slots keep them ascending, the last entry ends the last sequence
    firsts = [(s * kv_heads + h) * capacity for s in sorted(slots) for h in range(kv_heads)]
    if list(slots) != sorted(slots):
        raise ValueError("prefill rows must come in ascending slot order")  # the engine's contract, not the user's
    cu_k = torch.tensor(firsts + [firsts[-1] + capacity], dtype=torch.int32)
    used_k = torch.tensor([n for n in lengths for _ in range(kv_heads)], dtype=torch.int32)
    packed = Packed(*(to_device(t, device) for t in (token_rows, token_cols, query_tokens, query_heads)))
    return VarlenBatch(cu_q=to_device(cu_q, device), cu_k=to_device(cu_k, device), used_k=to_device(used_k, device),
                       max_q=max(new), max_k=max(lengths), packed=packed)
