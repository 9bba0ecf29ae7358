"""Flash attention's variable-length kernel against ``reference_kernel`` on the GPU, as the engine calls it.

    PYTHONPATH=. python benchmarks/gpu/varlen_check.py

The CPU tests (tests/models/test_varlen.py) drive the engine's varlen path through ``reference_kernel``; this
checks that the kernel the GPU runs computes the same on the same layouts: a decoding step (one query per
(slot, kv head) sequence, each reading its own used keys of a slot cache) and a packed prefill (causal,
bottom-right), with grouped queries, bf16; and that a decoding step's kernel can be recorded as a CUDA graph.
Also the fused norm and rotary kernels (``harness.models.fused``) against transformers' Llama functions, with
the share of bit-equal elements and the time of each, replayed from a CUDA graph (as a decoding step runs).
Prints one JSON line per check with the largest absolute difference; exits 1 if any is over the bf16
tolerance.
"""

from __future__ import annotations

import json
import sys

import torch

from harness.models import decode_kernel, fused, varlen

TOLERANCE = 2e-2  # bf16 attention outputs of magnitude ~1: a few units in the last place


def cache(slots: int, kv_heads: int, capacity: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.randn(slots, kv_heads, capacity, dim, device="cuda", dtype=torch.bfloat16)
    return k, torch.randn_like(k)


def decode_check(slots: int = 96, heads: int = 40, kv_heads: int = 8, capacity: int = 768, dim: int = 128) -> dict:
    k, v = cache(slots, kv_heads, capacity, dim)
    pos = torch.randint(0, capacity - 1, (slots,), device="cuda")
    batch = varlen.decode_batch(slots, kv_heads, capacity, "cuda")
    used = varlen.used_for_decoding(pos, kv_heads)
    q = torch.randn(slots * kv_heads, heads // kv_heads, dim, device="cuda", dtype=torch.bfloat16)
    flat_k, flat_v = k.reshape(-1, 1, dim), v.reshape(-1, 1, dim)
    args = (batch.cu_q, batch.cu_k, used, 1, capacity, False, dim ** -0.5)
    got = varlen.flash_kernel(q, flat_k, flat_v, *args)
    want = varlen.reference_kernel(q.float(), flat_k.float(), flat_v.float(), *args)
    graph_diff = None
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        varlen.flash_kernel(q, flat_k, flat_v, *args)
    torch.cuda.current_stream().wait_stream(side)
    with torch.cuda.graph(graph):
        out = varlen.flash_kernel(q, flat_k, flat_v, *args)
    pos.copy_(torch.randint(0, capacity - 1, (slots,), device="cuda"))  # new lengths, same addresses
    used.copy_(varlen.used_for_decoding(pos, kv_heads))
    graph.replay()
    again = varlen.reference_kernel(q.float(), flat_k.float(), flat_v.float(), batch.cu_q, batch.cu_k, used, 1,
                                    capacity, False, dim ** -0.5)
    graph_diff = (out.float() - again).abs().max().item()
    return {"check": "decode", "slots": slots, "heads": heads, "kv_heads": kv_heads,
            "max_abs_diff": (got.float() - want).abs().max().item(), "graph_replay_max_abs_diff": graph_diff}


def triton_decode_check(slots: int = 128, heads: int = 40, kv_heads: int = 40, capacity: int = 896,
                        dim: int = 128) -> dict:
    """The decoding step's Triton kernel against the reference, eager and replayed from a CUDA graph, and its
    speed against flash attention's varlen kernel on the same step (lengths of a 13B evaluation)."""
    k, v = cache(slots, kv_heads, capacity, dim)
    pos = torch.randint(250, 720, (slots,), device="cuda")
    batch = varlen.decode_batch(slots, kv_heads, capacity, "cuda")
    used = varlen.used_for_decoding(pos, kv_heads)
    q = torch.randn(slots * kv_heads, heads // kv_heads, dim, device="cuda", dtype=torch.bfloat16)
    flat_k, flat_v = k.reshape(-1, 1, dim), v.reshape(-1, 1, dim)
    scale = dim ** -0.5
    got = decode_kernel.decode_attention(q, k, v, used, capacity, scale)
    want = varlen.reference_kernel(q.float(), flat_k.float(), flat_v.float(), batch.cu_q, batch.cu_k, used, 1,
                                   capacity, False, scale)
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        decode_kernel.decode_attention(q, k, v, used, capacity, scale)
    torch.cuda.current_stream().wait_stream(side)
    with torch.cuda.graph(graph):
        out = decode_kernel.decode_attention(q, k, v, used, capacity, scale)
    pos.copy_(torch.randint(250, 720, (slots,), device="cuda"))
    used.copy_(varlen.used_for_decoding(pos, kv_heads))
    graph.replay()
    again = varlen.reference_kernel(q.float(), flat_k.float(), flat_v.float(), batch.cu_q, batch.cu_k, used, 1,
                                    capacity, False, scale)

    def timed(fn) -> float:
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(20):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 20 * 1e3

    triton_us = timed(lambda: decode_kernel.decode_attention(q, k, v, used, capacity, scale))
    flash_us = timed(lambda: varlen.flash_kernel(q, flat_k, flat_v, batch.cu_q, batch.cu_k, used, 1, capacity,
                                                 False, scale))
    read = int(used.sum().item()) * 2 * dim * 2  # keys and values, bf16
    floor_us = read / (4.25e12) * 1e6
    return {"check": "triton decode", "slots": slots, "heads": heads, "kv_heads": kv_heads,
            "max_abs_diff": (got.float() - want).abs().max().item(),
            "graph_replay_max_abs_diff": (out.float() - again).abs().max().item(),
            "triton_us": round(triton_us, 1), "flash_us": round(flash_us, 1),
            "read_floor_us_at_4.25TB_s": round(floor_us, 1)}


def prefill_check(heads: int = 40, kv_heads: int = 40, capacity: int = 768, dim: int = 128) -> dict:
    slots = [0, 3, 4, 9]
    starts, lengths = [0, 160, 48, 300], [250, 420, 49, 627]
    k, v = cache(10, kv_heads, capacity, dim)
    batch = varlen.prefill_batch(slots, starts, lengths, kv_heads, capacity, "cuda")
    total = sum(n - s for n, s in zip(lengths, starts, strict=True))
    q = torch.randn(total * kv_heads, heads // kv_heads, dim, device="cuda", dtype=torch.bfloat16)
    flat_k, flat_v = k.reshape(-1, 1, dim), v.reshape(-1, 1, dim)
    args = (batch.cu_q, batch.cu_k, batch.used_k, batch.max_q, batch.max_k, True, dim ** -0.5)
    got = varlen.flash_kernel(q, flat_k, flat_v, *args)
    want = varlen.reference_kernel(q.float(), flat_k.float(), flat_v.float(), *args)
    return {"check": "prefill", "rows": len(slots), "tokens": total, "heads": heads, "kv_heads": kv_heads,
            "max_abs_diff": (got.float() - want).abs().max().item()}


def graph_us(fn, repeats: int = 40) -> float:
    """Microseconds per call of ``fn`` recorded ``repeats`` times in one CUDA graph (no launch gaps)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(repeats):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / (5 * repeats) * 1e3


def fused_check(tokens: int, hidden: int = 5120, heads: int = 40, kv_heads: int = 40, dim: int = 128) -> dict:
    """The fused norm and rotary kernels against transformers' on ``tokens`` rows (128: a decoding step of 128
    slots; thousands: a prefill), bf16; bit-equal shares and microseconds per call, fused and not."""
    from transformers.models.llama import modeling_llama

    norm = modeling_llama.LlamaRMSNorm(hidden, eps=1e-5).to("cuda", torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(hidden, device="cuda"))
    x = torch.randn(tokens, 1, hidden, device="cuda", dtype=torch.bfloat16) * 2
    with torch.no_grad():
        want_norm, got_norm = norm(x), fused.rms_norm(x, norm.weight, norm.variance_epsilon)
    q = torch.randn(tokens, 1, heads, dim, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    k = torch.randn(tokens, 1, kv_heads, dim, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    angles = torch.rand(tokens, 1, dim // 2, device="cuda") * 100
    cos = torch.cat([angles.cos()] * 2, -1).to(torch.bfloat16)
    sin = torch.cat([angles.sin()] * 2, -1).to(torch.bfloat16)
    want_q, want_k = modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)
    got_q, got_k = fused.rotary(q, k, cos, sin)
    with torch.no_grad():
        times = {"norm_us": graph_us(lambda: norm(x)),
                 "fused_norm_us": graph_us(lambda: fused.rms_norm(x, norm.weight, norm.variance_epsilon)),
                 "rotary_us": graph_us(lambda: modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)),
                 "fused_rotary_us": graph_us(lambda: fused.rotary(q, k, cos, sin))}
    return {"check": "fused norm and rotary", "tokens": tokens, "hidden": hidden,
            "max_abs_diff": max((got_norm.float() - want_norm.float()).abs().max().item(),
                                (got_q.float() - want_q.float()).abs().max().item(),
                                (got_k.float() - want_k.float()).abs().max().item()),
            "norm_bit_equal": round((got_norm == want_norm).float().mean().item(), 5),
            "rotary_bit_equal": (got_q == want_q).all().item() and (got_k == want_k).all().item(),
            # what the engine's self-check decides on this device (False: the model keeps transformers' kernels)
            "norm_accepted": fused._norm_matches(norm, torch.bfloat16),
            "rotary_accepted": fused._rotary_matches(modeling_llama.apply_rotary_pos_emb, heads, kv_heads, dim,
                                                     torch.bfloat16, "cuda"),
            **{key: round(value, 1) for key, value in times.items()}}


def main() -> int:
    torch.manual_seed(0)
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(),
                      "schema": str(torch.ops.aten._flash_attention_forward.default._schema)}))
    worst = 0.0
    for row in (decode_check(), decode_check(slots=128, heads=40, kv_heads=40, capacity=896), prefill_check(),
                prefill_check(heads=9, kv_heads=3, dim=64), triton_decode_check(),
                triton_decode_check(slots=64, heads=9, kv_heads=3, dim=64), fused_check(128), fused_check(2048),
                fused_check(128, hidden=576, heads=9, kv_heads=3, dim=64)):
        print(json.dumps(row), flush=True)
        worst = max(worst, row["max_abs_diff"], row.get("graph_replay_max_abs_diff") or 0.0)
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
