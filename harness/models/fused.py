"""RMSNorm and rotary embeddings as one Triton kernel each, in place of transformers' chains of small kernels.

Why: a 13B decoding step on the H200 is one recorded CUDA graph of ~1,500 kernels, and most are tiny
elementwise kernels on ``[rows, 5120]``: transformers' ``LlamaRMSNorm`` is eight (to float32, pow, mean, add,
rsqrt, mul, to bf16, mul by the weight) and ``apply_rotary_pos_emb`` ten (a product, a negation, a cat, a
product and a sum for each of the queries and the keys). Each costs a few microseconds of device time however
small, about 4 ms of a 22 ms step at 128 rows (docs/performance.md). Here each is one kernel: 81 norms and 40
rotary calls a step instead of 648 and 400 kernels.

Same numbers as transformers: the norm is computed in float32 and rounded to the input's dtype before the
weight's product (rounded to the promoted dtype), as ``LlamaRMSNorm`` does; the rotary products and their
sum are each rounded to the input's dtype, as the unfused ``q * cos + rotate_half(q) * sin`` is (compiled
without floating-point contraction, which would fuse a product into the sum unrounded). Only the mean's
summation order differs (a float32 sum in another order), so a bf16 norm may differ by one rounding at a
near tie: the usual batch-composition wobble, bounded in the engine's tests.

What is replaced, and only inside the engine's forwards (``FusedOps.applied``; plain ``generate`` on the same
model is untouched): the ``forward`` of each norm module, and the ``apply_rotary_pos_emb`` function of each
attention layer's Python module (which its ``forward`` looks up when it runs). Each is checked once against the
original on random inputs (``prepare``) and left alone when it differs (Gemma's ``1 + weight``, partial rotary,
any future change) or when the call's shapes are not the ones handled here: never faster and wrong.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import types
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ROTARY_NAME = "apply_rotary_pos_emb"  # the function transformers' Llama-like attention layers call
HEADS_PER_PROGRAM = 8  # rotary: heads of one token per program

_kernels: Any = None


@functools.cache
def available() -> bool:
    """Triton importable (the GPU image has it; a CPU install need not)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _build() -> Any:
    import triton
    import triton.language as tl

    @triton.jit
    def rms_norm_kernel(X, W, Y, stride_x, stride_y, n, eps, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        inside = cols < n
        x = tl.load(X + row * stride_x + cols, mask=inside, other=0.0)
        xf = x.to(tl.float32)
        variance = tl.sum(xf * xf, 0) / n
        normed = (xf * tl.rsqrt(variance + eps)).to(x.dtype)  # rounded to the input's dtype, as transformers
        w = tl.load(W + cols, mask=inside, other=0.0)
        y = w.to(tl.float32) * normed.to(tl.float32)
        tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=inside)

    @triton.jit
    def rotary_kernel(Q, K, Cos, Sin, QO, KO, tokens, q_heads, k_heads,
                      qs_b, qs_h, qs_t, ks_b, ks_h, ks_t, cs_b, cs_t,
                      HALF: tl.constexpr, HB: tl.constexpr):
        # one token (b, t), HB heads of the queries then the keys: head h < q_heads is a query head
        bt = tl.program_id(0)
        b = (bt // tokens).to(tl.int64)
        t = (bt % tokens).to(tl.int64)
        h = tl.program_id(1) * HB + tl.arange(0, HB)
        d = tl.arange(0, HALF)
        is_q = h < q_heads
        is_k = (h >= q_heads) & (h < q_heads + k_heads)
        hk = tl.where(is_k, h - q_heads, 0)
        hq = tl.where(is_q, h, 0)
        c = Cos + b * cs_b + t * cs_t
        cos1 = tl.load(c + d).to(tl.float32)
        cos2 = tl.load(c + HALF + d).to(tl.float32)
        s = Sin + b * cs_b + t * cs_t
        sin1 = tl.load(s + d).to(tl.float32)
        sin2 = tl.load(s + HALF + d).to(tl.float32)
        q_at = Q + b * qs_b + t * qs_t + hq[:, None] * qs_h + d[None, :]
        k_at = K + b * ks_b + t * ks_t + hk[:, None] * ks_h + d[None, :]
        mq = is_q[:, None]
        mk = is_k[:, None]
        x1 = tl.where(mq, tl.load(q_at, mask=mq, other=0.0), tl.load(k_at, mask=mk, other=0.0))
        x2 = tl.where(mq, tl.load(q_at + HALF, mask=mq, other=0.0), tl.load(k_at + HALF, mask=mk, other=0.0))
        dt = x1.dtype
        # x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1): each product and the sum rounded to dt
        a1 = (x1.to(tl.float32) * cos1[None, :]).to(dt)
        b1 = (-(x2.to(tl.float32)) * sin1[None, :]).to(dt)
        a2 = (x2.to(tl.float32) * cos2[None, :]).to(dt)
        b2 = (x1.to(tl.float32) * sin2[None, :]).to(dt)
        o1 = (a1.to(tl.float32) + b1.to(tl.float32)).to(dt)
        o2 = (a2.to(tl.float32) + b2.to(tl.float32)).to(dt)
        # outputs contiguous [B, heads, T, 2 * HALF]
        qo = QO + ((b * q_heads + hq[:, None]) * tokens + t) * (2 * HALF) + d[None, :]
        ko = KO + ((b * k_heads + hk[:, None]) * tokens + t) * (2 * HALF) + d[None, :]
        tl.store(qo, o1, mask=mq)
        tl.store(qo + HALF, o2, mask=mq)
        tl.store(ko, o1, mask=mk)
        tl.store(ko + HALF, o2, mask=mk)

    return rms_norm_kernel, rotary_kernel


def _get() -> Any:
    global _kernels
    if _kernels is None:
        _kernels = _build()
    return _kernels


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``LlamaRMSNorm``: ``weight * (x / sqrt(mean(x**2) + eps)).to(x.dtype)`` over the last dimension."""
    import torch
    import triton

    n = x.shape[-1]
    rows = x.reshape(-1, n)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    out = torch.empty(rows.shape, dtype=torch.promote_types(weight.dtype, x.dtype), device=x.device)
    block = triton.next_power_of_2(n)
    _get()[0][(rows.shape[0],)](rows, weight, out, rows.stride(0), out.stride(0), n, eps, BLOCK=block,
                                num_warps=8 if block >= 4096 else 4)
    return out.view(*x.shape[:-1], n)


def rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``apply_rotary_pos_emb(q, k, cos, sin)`` for ``q [B, H, T, D]``, ``k [B, KH, T, D]`` (any strides, the last
    dimension contiguous) and ``cos``/``sin`` ``[B or 1, T, D]``; the outputs contiguous."""
    import torch
    import triton

    batch, heads, tokens, dim = q.shape
    k_heads = k.shape[1]
    if cos.stride(-1) != 1 or sin.stride() != cos.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    qo = torch.empty((batch, heads, tokens, dim), dtype=q.dtype, device=q.device)
    ko = torch.empty((batch, k_heads, tokens, dim), dtype=k.dtype, device=k.device)
    cs_b = cos.stride(0) if cos.shape[0] > 1 else 0
    grid = (batch * tokens, triton.cdiv(heads + k_heads, HEADS_PER_PROGRAM))
    _get()[1][grid](q, k, cos, sin, qo, ko, tokens, heads, k_heads,
                    q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
                    cs_b, cos.stride(1), HALF=dim // 2, HB=HEADS_PER_PROGRAM,
                    # no contraction: with it the compiler turned a product and the sum into one fused
                    # multiply-add (fma.rn.bf16x2 on the H200), skipping the product's rounding, one bf16 ulp off
                    enable_fp_fusion=False)
    return qo, ko


def _rotary_shapes_ok(q: Any, k: Any, cos: Any, sin: Any, unsqueeze_dim: int) -> bool:
    """The calls ``rotary`` takes; anything else goes to the original function."""
    return (unsqueeze_dim == 1 and q.dim() == 4 and k.dim() == 4 and cos.dim() == 3 and sin.shape == cos.shape
            and q.shape[0] == k.shape[0] and q.shape[2] == k.shape[2] and q.shape[3] == k.shape[3]
            and cos.shape[1:] == (q.shape[2], q.shape[3]) and cos.shape[0] in (1, q.shape[0])
            and q.shape[3] % 2 == 0 and not (q.shape[3] // 2) & (q.shape[3] // 2 - 1)
            and q.stride(3) == 1 and k.stride(3) == 1 and q.dtype == k.dtype == cos.dtype == sin.dtype
            and q.device == k.device == cos.device)


def fused_rotary_for(original: Callable[..., Any]) -> Callable[..., Any]:
    """A drop-in for ``original`` (transformers' ``apply_rotary_pos_emb``) that runs ``rotary`` when it can."""

    def apply_rotary_pos_emb(q: Any, k: Any, cos: Any, sin: Any, *args: Any, **kwargs: Any) -> Any:
        unsqueeze_dim = kwargs.get("unsqueeze_dim", 1)
        if args or set(kwargs) - {"unsqueeze_dim"} or not _rotary_shapes_ok(q, k, cos, sin, unsqueeze_dim):
            return original(q, k, cos, sin, *args, **kwargs)
        return rotary(q, k, cos, sin)

    apply_rotary_pos_emb.__wrapped__ = original  # type: ignore[attr-defined]
    return apply_rotary_pos_emb


def _norm_forward(module: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    return rms_norm(hidden_states, module.weight, module.variance_epsilon)


@dataclass
class FusedOps:
    """What ``prepare`` found replaceable on a model: its norm modules and its attention layers' Python modules."""

    norms: list[Any] = field(default_factory=list)
    rotary_modules: list[types.ModuleType] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.norms or self.rotary_modules)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Inside: the fused kernels serve the model's norms and rotary embeddings."""
        originals = [(m, getattr(m, ROTARY_NAME)) for m in self.rotary_modules]
        for module in self.norms:
            module.forward = types.MethodType(_norm_forward, module)
        for py_module, original in originals:
            setattr(py_module, ROTARY_NAME, fused_rotary_for(original))
        try:
            yield
        finally:
            for py_module, original in originals:
                setattr(py_module, ROTARY_NAME, original)
            for module in self.norms:
                del module.forward  # the class's forward again


def _close(got: torch.Tensor, want: torch.Tensor, scale: torch.Tensor | None = None) -> bool:
    """Same dtype and shape, and equal up to one rounding of the dtype at the magnitude ``scale`` (default: the
    value's own). A norm's rounding is relative to its value; a rotary sum's to its two products, which may
    nearly cancel (so the rotary check passes ``|x1| + |x2|``). Triton's CPU interpreter, which the tests run,
    rounds float32 to bfloat16 differently from torch: this is what keeps it within the check."""
    import torch

    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    tolerance = 2 * torch.finfo(want.dtype).eps
    magnitude = (want if scale is None else scale).float().abs()
    return bool(((got.float() - want.float()).abs() <= tolerance * magnitude + 1e-6).all())


def _pair_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``|x1| + |x2|`` in both halves of the last dimension: the largest a rotary product pair can be."""
    a = x.float().abs()
    return a + a.roll(x.shape[-1] // 2, -1)


def _norm_matches(module: Any, dtype: torch.dtype) -> bool:
    import torch

    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1 or not hasattr(module, "variance_epsilon"):
        return False
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = (torch.randn((3, weight.shape[0]), generator=gen) * 3).to(device=weight.device, dtype=dtype)
    with torch.no_grad():
        return _close(rms_norm(x, weight, module.variance_epsilon), module.forward(x))


def _rotary_matches(original: Callable[..., Any], heads: int, k_heads: int, dim: int, dtype: torch.dtype,
                    device: Any) -> bool:
    import torch

    gen = torch.Generator(device="cpu").manual_seed(1)
    b, t = 2, 3
    q = torch.randn((b, t, heads, dim), generator=gen).to(device=device, dtype=dtype).transpose(1, 2)
    k = torch.randn((b, t, k_heads, dim), generator=gen).to(device=device, dtype=dtype).transpose(1, 2)
    angles = torch.rand((b, t, dim // 2), generator=gen) * 6
    cos = torch.cat([angles.cos()] * 2, -1).to(device=device, dtype=dtype)
    sin = torch.cat([angles.sin()] * 2, -1).to(device=device, dtype=dtype)
    with torch.no_grad():
        want = original(q, k, cos, sin)
        got = rotary(q, k, cos, sin)
    return (isinstance(want, tuple) and len(want) == 2 and _close(got[0], want[0], _pair_magnitude(q))
            and _close(got[1], want[1], _pair_magnitude(k)))


_prepared: weakref.WeakKeyDictionary[Any, FusedOps] = weakref.WeakKeyDictionary()


def ops_for(model: Any) -> FusedOps:
    """``prepare(model)``, once per model (the engine is built per call)."""
    ops = _prepared.get(model)
    if ops is None:
        ops = _prepared[model] = prepare(model)
    return ops


def prepare(model: Any) -> FusedOps:
    """The norms and rotary functions of ``model`` that the fused kernels compute like the originals (each
    class and Python module checked once on random inputs, in the model's dtype on its device)."""
    from harness.models.engine import head_shape

    ops = FusedOps()
    dtype = model.get_input_embeddings().weight.dtype
    checked: dict[type, bool] = {}
    for module in model.modules():
        cls = type(module)
        if not cls.__name__.endswith("RMSNorm"):
            continue
        if cls not in checked:
            checked[cls] = _norm_matches(module, dtype)
            if not checked[cls]:
                log.info("fused kernels: %s left as it is (not computed like LlamaRMSNorm)", cls.__name__)
        if checked[cls]:
            ops.norms.append(module)
    shape = head_shape(model.config)
    seen: set[str] = set()
    for module in model.modules():
        name = type(module).__module__
        if not type(module).__name__.endswith("Attention") or name in seen:
            continue
        seen.add(name)
        py_module = sys.modules.get(name)
        original = getattr(py_module, ROTARY_NAME, None)
        if py_module is None or not callable(original):
            continue
        device = model.get_input_embeddings().weight.device
        if _rotary_matches(original, shape.heads, shape.kv_heads, shape.head_dim, dtype, device):
            ops.rotary_modules.append(py_module)
        else:
            log.info("fused kernels: %s.%s left as it is (not computed like Llama's)", name, ROTARY_NAME)
    return ops
