"""Generation throughput as an evaluation sees it, on a random-init model of a real model's shape (no model
hub needed), with plain ``model.generate`` on the same workload in the same process as the anchor.

    python benchmarks/perf/generation.py --shape codellama-13b --modes bf16,8bit,4bit --out gen.jsonl

The workload is the bundled benchmark's (``hangzhou_lengths.json``: the 167 test prompts' token ids and
lengths, their gold SQL's length + 1): ``--prompts real`` (default) uses each question's own prompt tokens,
mapped into the model's vocabulary, each question once; ``--prompts random`` draws (prompt, stop) length
pairs with replacement and fills the prompts with random words, as the runs before 2026-12-01 did. Random weights never stop by themselves, so a logits hook forces EOS after the
row's stop length, and a pseudo-random word of (item, position) before it, on both paths: both write the
same tokens, early-stopping rows are part of the measurement, and no row loops. The harness's stop checks (statement end, fence, loop) run as in an evaluation.

One JSON line per setting (path x mode x batch), printed and appended to --out as soon as measured:

* ``useful_tok_s``: tokens before each row's stop, over generation wall time;
* ``ms_per_step``: wall time over decoding steps (the engine's own count; ``generate``: each batch's
  longest row);
* ``peak_gib``: peak GPU memory allocated during the setting;
* ``floor_tok_s`` and ``x_off_floor``: the bandwidth floor at that batch, (weight bytes + KV bytes read
  per step) / the copy bandwidth measured at the start of the run, and how far the setting is from it;
* ``e2e_floor_tok_s`` and ``x_off_e2e_floor``: the same floor plus the prefill's compute floor, (2 x the
  linear layers' parameters x the prompt tokens that are not a prefix of an earlier prompt) / the bf16
  matmul FLOP/s measured at the start; the wall time an evaluation cannot go below, since every distinct
  prompt token must be read once;
* harness rows also give ``prefill_s`` (of ``wall_s``), ``decode_ms_per_step`` (the rest over the steps),
  ``prefill_tokens`` (left padding included), ``prefill_computed`` (without it), ``prefill_forwards`` and
  ``backoffs`` (out-of-memory restarts).

Each mode first runs the whole workload once, untimed, on both paths (``warm_up``): the first large
allocations and the kernel choices for large shapes do not fall in a timed row.

``--smoke`` runs the whole thing on the CPU with a tiny shape in seconds (CI runs it:
tests/perf/test_generation_bench.py). Needs torch, transformers and (for 8bit/4bit) bitsandbytes only:
no sqlglot, no psycopg. ``--write-lengths`` regenerates the lengths file (needs the embedded model's
package and the harness's loaders).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from figures import print_top_operators, profiled_totals  # benchmarks/perf/figures.py, beside this script

from harness.models.base import BackendOptions, GenerationConfig, Prompt

SHAPES = {  # hidden, intermediate, layers, heads, kv heads, vocab
    "codellama-7b": (4096, 11008, 32, 32, 32, 32016),
    "codellama-13b": (5120, 13824, 40, 40, 40, 32016),
    "smollm2-135m": (576, 1536, 30, 9, 3, 49152),
    "tiny": (64, 128, 2, 2, 2, 1000),
}
LENGTHS = Path(__file__).with_name("hangzhou_lengths.json")
EOS = 2


@dataclass(frozen=True)
class Workload:
    prompts: list[Prompt]
    stops: list[int]  # tokens each row generates, EOS included

    @property
    def useful(self) -> int:
        return sum(self.stops)

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p.text.split()) for p in self.prompts)

    @property
    def distinct_prompt_tokens(self) -> int:
        """Prompt tokens that are not a prefix of an earlier prompt (the nodes of their prefix trie): what
        even a perfect prefix cache must compute."""
        trie: dict[str, Any] = {}
        count = 0
        for p in self.prompts:
            node = trie
            for word in p.text.split():
                if word not in node:
                    node[word] = {}
                    count += 1
                node = node[word]
        return count


def workload(items: int, vocab: int, seed: int = 0, prompts: str = "real") -> Workload:
    """``items`` questions of the bundled benchmark as (prompt, stop length) pairs. ``real``: the test
    prompts' own token ids (mapped into the model's vocabulary), each question once while ``items`` allows,
    so prompts share their prefixes as in an evaluation (the template's instructions, a table's DDL);
    ``random``: random words of the prompts' lengths, questions drawn with replacement (the workload of
    the runs before 2026-12-01). The word-level tokenizer of ``build`` adds no BOS."""
    data = json.loads(LENGTHS.read_text())
    rng = random.Random(seed)
    n = len(data["prompt_tokens"])
    if prompts == "real":
        picks = rng.sample(range(n), items) if items <= n else [rng.randrange(n) for _ in range(items)]
        texts = [" ".join(f"w{3 + t % (vocab - 3)}" for t in data["prompt_ids"][j]) for j in picks]
    else:
        picks = [rng.randrange(n) for _ in range(items)]
        texts = [" ".join(f"w{rng.randrange(3, vocab)}" for _ in range(data["prompt_tokens"][j])) for j in picks]
    return Workload([Prompt(str(i), t) for i, t in enumerate(texts)], [data["stop_tokens"][j] for j in picks])


def force(scores: Any, stops: Any, counts: Any, items: Any) -> Any:
    """The token each row must choose: EOS at its stop length, before it a pseudo-random word that depends
    only on (item, position), so both paths write the same tokens and no row loops (random weights tend
    to repeat one token, which the loop check would stop early; never forbidding EOS could not either)."""
    import torch

    big = torch.finfo(scores.dtype).max
    vocab = scores.shape[1]
    word = (items * 7919 + counts * 104729 + 12345) % (vocab - 3) + 3
    choice = torch.where(counts + 1 >= stops, torch.full_like(word, EOS), word)
    scores.scatter_(1, choice[:, None], big)
    return scores


def build(shape: str, device: str) -> tuple[Any, Any]:
    """Random-init Llama of the given shape in bf16 on ``device``, with a word-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    hidden, inter, layers, heads, kv, vocab = SHAPES[shape]
    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab,
                      max_position_embeddings=4096, bos_token_id=1, eos_token_id=EOS, pad_token_id=0,
                      dtype="bfloat16")
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # initialise in bf16: half the memory and time
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    words = ["<pad>", "<s>", "</s>"] + [f"w{i}" for i in range(3, vocab)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                        unk_token="<pad>", pad_token="<pad>")
    return model.eval(), tokenizer


def copy_bandwidth(device: str) -> float:
    """Bytes per second of a device-to-device copy (read + write counted), the floor's denominator."""
    import torch

    n = (1 << 30) if device == "cuda" else (1 << 26)
    src = torch.empty(n // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        dst.copy_(src)
    _sync(device)
    return 2 * n * reps / (time.perf_counter() - t0)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def matmul_flops(device: str) -> float:
    """FLOP/s of a large bf16 matrix product, the prefill floor's denominator (best of a few)."""
    import torch

    n = 8192 if device == "cuda" else 256
    a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    a @ b
    best = float("inf")
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - t0) / 10)
    return 2 * n**3 / best


@dataclass(frozen=True)
class Floors:
    """What the floors of a run are computed from, measured once at its start on the bf16 model."""

    bandwidth: float  # bytes/s of a device copy
    flops: float  # bf16 matmul FLOP/s
    linear_params: int  # parameters of the decoder's linear layers: 2 x this FLOPs per prompt token

    @classmethod
    def measure(cls, model: Any, device: str) -> Floors:
        import torch

        inner = model.get_decoder() if hasattr(model, "get_decoder") else model
        params = sum(m.weight.numel() for m in inner.modules() if isinstance(m, torch.nn.Linear))
        return cls(copy_bandwidth(device), matmul_flops(device), params)


def weight_bytes(model: Any) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def floor(model: Any, batch: int, work: Workload, floors: Floors) -> dict[str, float]:
    """Tokens/s at the bandwidth floor with ``batch`` rows decoding: each step reads the weights once and
    every row's KV cache (its prompt plus, on average, half its output); and end to end, with the prefill
    at the measured matmul speed added, of the prompt tokens even a perfect prefix cache computes."""
    import torch

    from harness.models.engine import kv_bytes_per_token

    dtype_bytes = torch.finfo(model.dtype).bits // 8
    context = statistics.mean(len(p.text.split()) + s / 2 for p, s in zip(work.prompts, work.stops, strict=True))
    step_bytes = weight_bytes(model) + batch * context * kv_bytes_per_token(model.config, dtype_bytes)
    step_s = step_bytes / floors.bandwidth
    decode_s = work.useful / (batch / step_s)
    prefill_s = 2 * floors.linear_params * work.distinct_prompt_tokens / floors.flops
    return {"floor_ms_per_step": round(step_s * 1e3, 3), "floor_tok_s": round(batch / step_s, 1),
            "prefill_floor_s": round(prefill_s, 3), "e2e_floor_tok_s": round(work.useful / (decode_s + prefill_s), 1)}


def run_harness(backend: Any, work: Workload, batch: int, max_new: int, graphs: bool = True,
                varlen: bool | None = None, decode: str = "auto", compact: bool | None = None,
                pipeline: bool | None = None, fused: bool | None = None) -> dict[str, Any]:
    """The harness's path once, timed; ``graphs=False``: decoding eagerly, ``varlen=False``: masked (sdpa)
    attention instead of variable-length attention (where flash attention works); ``decode``: the varlen
    decoding step's kernel (``harness.models.varlen.DECODE_KERNELS``); ``compact``, ``pipeline``, ``fused``: the
    engine's switches (None: its defaults)."""
    from harness.models import varlen as varlen_attention

    chosen = varlen_attention.choose_decode_kernel(decode)
    backend.compact, backend.pipeline, backend.fused = compact, pipeline, fused
    try:
        return _run_harness(backend, work, batch, max_new, graphs, varlen)
    finally:
        varlen_attention.choose_decode_kernel(chosen)
        backend.compact, backend.pipeline, backend.fused = None, None, None


def _run_harness(backend: Any, work: Workload, batch: int, max_new: int, graphs: bool,
                 varlen: bool | None) -> dict[str, Any]:
    import torch

    device = backend.model.device
    learned = backend.cuda_graphs  # False once a step of this model could not be recorded
    backend.cuda_graphs = graphs and learned
    backend.varlen = varlen
    stops = torch.tensor(work.stops, device=device)
    backend.logits_hook = lambda logits, items, counts: force(logits, stops[items], counts, items)
    config = GenerationConfig(max_new_tokens=max_new, batch_size=batch)
    t0 = time.perf_counter()
    gens = backend.generate(work.prompts, config)
    _sync(device.type)
    wall = time.perf_counter() - t0
    backend.logits_hook = None
    backend.cuda_graphs = backend.cuda_graphs if graphs else learned
    backend.varlen = None
    exact = sum(g.tokens_out == s for g, s in zip(gens, work.stops, strict=True))
    run = backend.last_run
    return {"wall_s": wall, "steps": run["steps"], "batch": run["slots"], "prefill_s": run["prefill_s"],
            "prefill_tokens": run["prefill_tokens"], "prefill_computed": run["prefill_computed"],
            "prefill_forwards": run["prefill_forwards"], "reused_tokens": run["reused_tokens"], "backoffs": run["backoffs"],
            "graph_captures": run["graph_captures"], "capture_s": run["capture_s"], "captures": run["captures"],
            "varlen": run["varlen"], "fused": run["fused"], "fused_norms": run["fused_norms"],
            "fused_rotary": run["fused_rotary"],
            "decode_ms_per_step": round(1e3 * (wall - run["prefill_s"]) / max(1, run["steps"]), 2),
            "rows_stopped_as_forced": f"{exact}/{len(gens)}"}


def run_generate(model: Any, tokenizer: Any, work: Workload, batch: int, max_new: int) -> dict[str, Any]:
    """Plain ``model.generate`` on the same prompts: sorted longest first, left-padded batches."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    class ForceStop(LogitsProcessor):
        def __init__(self, items: list[int], width: int) -> None:
            self.items = torch.tensor(items, device=model.device)
            self.stops = torch.tensor([work.stops[i] for i in items], device=model.device)
            self.width = width

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            counts = torch.full_like(self.items, input_ids.shape[1] - self.width)
            return force(scores, self.stops, counts, self.items)

    order = sorted(range(len(work.prompts)), key=lambda i: -len(work.prompts[i].text.split()))
    steps, t0 = 0, time.perf_counter()
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        enc = tokenizer([work.prompts[i].text for i in idx], return_tensors="pt", padding=True,
                        padding_side="left").to(model.device)
        with torch.inference_mode():
            model.generate(**enc, max_new_tokens=max_new, do_sample=False, temperature=None, top_p=None,
                           top_k=None, pad_token_id=0, eos_token_id=EOS,
                           logits_processor=LogitsProcessorList([ForceStop(idx, enc["input_ids"].shape[1])]))
        steps += max(work.stops[i] for i in idx)
    _sync(model.device.type)
    return {"wall_s": time.perf_counter() - t0, "steps": steps, "batch": batch}


def settle(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def measure(row: dict[str, Any], fn: Any, work: Workload, model: Any, floors: Floors) -> dict[str, Any]:
    import torch

    device = model.device.type
    settle(device)
    try:
        got = fn()
    except Exception as exc:  # report and go on with the next setting
        return {**row, "error": f"{type(exc).__name__}: {exc}"[:400]}
    out = {**row, **got, "useful_tokens": work.useful, "useful_tok_s": round(work.useful / got["wall_s"], 1),
           "ms_per_step": round(1e3 * got["wall_s"] / max(1, got["steps"]), 2), "wall_s": round(got["wall_s"], 2)}
    if device == "cuda":
        out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    out.update(floor(model, out["batch"], work, floors))
    out["x_off_floor"] = round(out["floor_tok_s"] / out["useful_tok_s"], 2)
    out["x_off_e2e_floor"] = round(out["e2e_floor_tok_s"] / out["useful_tok_s"], 2)
    return out


def load_mode(mode: str, shape: str, device: str, saved: Path | None, built: tuple[Any, Any] | None) -> Any:
    """The harness backend for a mode: bf16 wraps the built model; 8bit/4bit load the saved copy through
    the harness's own loader (BitsAndBytesConfig)."""
    from harness.models.hf import HFBackend, load_hf_backend

    if mode == "bf16" and built is not None:
        return HFBackend(built[0], built[1], spec=f"random:{shape}", fingerprint="random")
    return load_hf_backend(str(saved), BackendOptions(dtype="bf16", quantize=None if mode == "bf16" else mode))


def warm_up(backend: Any, work: Workload, batch: int, max_new: int, sdpa: bool = False,
            generate: bool = True, flash_decode: bool = False) -> None:
    """The timed workload once on each path, untimed: first allocations of its size, kernel choices for
    its shapes (the first harness row of 2026-11-30 paid for those: 292 tok/s cold, 687 warm)."""
    import torch

    ran = run_harness(backend, work, batch, max_new)
    if flash_decode:
        run_harness(backend, work, batch, max_new, decode="flash")
    if sdpa:
        run_harness(backend, work, batch, max_new, varlen=False)
    if not generate:
        return
    try:
        run_generate(backend.model, backend.tokenizer, work, batch or ran["batch"], max_new)
    except torch.OutOfMemoryError:  # plain generate needs more memory than the engine at this batch
        settle(backend.model.device.type)  # its timed row reports the error


# --FLAG-too: its path, and what run_harness changes for it
VARIANTS: list[tuple[str, str, dict[str, Any], str]] = [
    ("eager_too", "harness-eager", {"graphs": False}, "its decoding step eager (no CUDA graphs)"),
    ("compact_too", "harness-compact", {"compact": True}, "compaction forced on (by default the engine skips it "
     "where the Triton kernel decodes)"),
    ("no_pipeline_too", "harness-no-pipeline", {"pipeline": False}, "each step's tokens read before the next "
     "launch"),
    ("flash_decode_too", "harness-flash-decode", {"decode": "flash"}, "flash attention's varlen kernel for the "
     "decoding steps instead of the Triton kernel"),
    ("sdpa_too", "harness-sdpa", {"varlen": False}, "masked sdpa attention instead of variable-length attention"),
    ("unfused_too", "harness-unfused", {"fused": False}, "transformers' own norms and rotary embeddings instead of "
     "the fused Triton kernels"),
]


def bench_mode(args: argparse.Namespace, mode: str, backend: Any, work: Workload, floors: Floors,
               emit: Any) -> None:
    """Harness and plain generate at each batch of --batches, after a warm-up at the first."""
    base = {"shape": args.shape, "mode": mode, "items": len(work.prompts)}
    first = args.batches.split(",")[0]
    warm_up(backend, work, 0 if first == "auto" else int(first), args.max_new_tokens, sdpa=args.sdpa_too,
            generate=not args.no_generate, flash_decode=args.flash_decode_too)
    model, tok = backend.model, backend.tokenizer
    for batch_spec in args.batches.split(","):
        asked = 0 if batch_spec == "auto" else int(batch_spec)
        if not args.clock.left(f"{mode} batch {batch_spec}", emit):
            return
        row = measure({**base, "path": "harness", "batch_asked": batch_spec},
                      lambda a=asked: run_harness(backend, work, a, args.max_new_tokens), work, model, floors)
        emit(row)
        batch = int(row.get("batch") or asked or 8)
        for flag, path, change, _what in VARIANTS:  # the harness with one thing changed, at the batch it chose
            if getattr(args, flag) and args.clock.left(f"{mode} {path} batch {batch}", emit):
                emit(measure({**base, "path": path, "batch_asked": batch_spec},
                             lambda b=batch, c=change: run_harness(backend, work, b, args.max_new_tokens, **c),
                             work, model, floors))
        if not args.no_generate and args.clock.left(f"{mode} generate batch {batch}", emit):
            emit(measure({**base, "path": "generate", "batch_asked": batch_spec},
                         lambda b=batch: run_generate(model, tok, work, b, args.max_new_tokens),
                         work, model, floors))
        if args.profile and args.clock.left(f"{mode} profile batch {batch}", emit):
            # the harness only: profiling plain generate took minutes on the H200 (2026-12-01)
            emit({**base, "profile": "harness", "batch": batch,
                  **profiled(lambda b=batch: run_harness(backend, work, b, args.max_new_tokens))})
        if args.sync_check and torch_cuda() and args.clock.left(f"{mode} sync check batch {batch}", emit):
            emit({**base, "sync_check": "harness", "batch": batch,
                  **sync_sites(lambda b=batch: run_harness(backend, work, b, args.max_new_tokens))})
        if args.check_graphs and args.clock.left(f"{mode} graphs against eager batch {batch}", emit):
            emit({**base, **check_graphs(backend, work, batch)})
        if args.check_attention and args.clock.left(f"{mode} varlen against sdpa batch {batch}", emit):
            emit({**base, **check_attention(backend, work, batch)})


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def own_greedy(backend: Any, work: Workload, batch: int, new_tokens: int) -> list[str]:
    """The model's own greedy tokens (no forcing, no stop checks), as text, item by item."""
    config = GenerationConfig(max_new_tokens=new_tokens, batch_size=batch, stop_at_statement_end=False,
                              stop_on_loop=False)
    return [g.text for g in backend.generate(work.prompts, config)]


def check_graphs(backend: Any, work: Workload, batch: int, new_tokens: int = 24) -> dict[str, Any]:
    """The model's own greedy tokens with the decoding step replayed from CUDA graphs and eager, same batch:
    items whose ids are equal."""
    runs, learned = [], backend.cuda_graphs
    for graphs in (True, False):
        backend.cuda_graphs = graphs and learned
        runs.append(own_greedy(backend, work, batch, new_tokens))
        if graphs and not backend.last_run["graph_captures"]:
            backend.cuda_graphs = learned and backend.cuda_graphs
            return {"check": "graphs against eager", "error": "no step was recorded as a CUDA graph"}
    backend.cuda_graphs = learned
    equal = sum(a == b for a, b in zip(*runs, strict=True))
    return {"check": "graphs against eager", "batch": batch, "new_tokens": new_tokens, "items": len(runs[0]),
            "equal": equal}


def check_attention(backend: Any, work: Workload, batch: int, new_tokens: int = 24) -> dict[str, Any]:
    """The model's own greedy tokens with variable-length attention (the default where flash attention works)
    and with masked sdpa attention, same batch: items whose ids are equal."""
    runs = []
    for varlen in (None, False):
        backend.varlen = varlen
        runs.append(own_greedy(backend, work, batch, new_tokens))
        if varlen is None and not backend.last_run["varlen"]:
            backend.varlen = None
            return {"check": "varlen against sdpa", "error": "variable-length attention is not usable here"}
    backend.varlen = None
    equal = sum(a == b for a, b in zip(*runs, strict=True))
    return {"check": "varlen against sdpa", "batch": batch, "new_tokens": new_tokens, "items": len(runs[0]),
            "equal": equal}


def profiled(fn: Any) -> dict[str, Any]:
    """``fn`` once under the torch profiler: its wall time, the device kernels' total and the launches
    (the operator tables go to stdout). Profiling slows the host, so the wall time is not a figure."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        got = fn()
    print_top_operators(prof)
    return {"profiled_wall_s": round(got["wall_s"], 2), **profiled_totals(prof)}


def sync_sites(fn: Any) -> dict[str, Any]:
    """``fn`` once with torch's synchronisation debugging on: every operation that made the host wait for the
    GPU, counted by where it was called (the innermost three frames outside torch). The engine should wait only
    where it reads tokens: a decoding step's event and each prefill's first tokens."""
    import traceback
    import warnings
    from collections import Counter

    import torch

    sites: Counter[str] = Counter()

    def record(*_args: Any, **_kwargs: Any) -> None:
        frames = [f for f in traceback.extract_stack()[:-1]
                  if "/torch/" not in f.filename and not f.filename.endswith("warnings.py")]
        sites[" < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames[-3:]))] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return {"syncs": sum(sites.values()), "sync_sites": dict(sites.most_common(12))}


class Clock:
    """The device call's time limit: a setting starts only with --reserve-s left before --budget-s."""

    def __init__(self, budget: float, reserve: float) -> None:
        self.end, self.reserve = time.perf_counter() + budget, reserve

    def left(self, what: str, emit: Any) -> bool:
        if self.end - time.perf_counter() >= self.reserve:
            return True
        emit({"skipped": what, "reason": "--budget-s nearly spent"})
        return False


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="codellama-13b")
    ap.add_argument("--modes", default="bf16,8bit,4bit", help="comma-separated: bf16, 8bit, 4bit")
    ap.add_argument("--items", type=int, default=167, help="questions drawn (default: the benchmark's 167)")
    ap.add_argument("--prompts", choices=("real", "random"), default="real", help="the test prompts' own tokens, "
                    "sharing prefixes as in an evaluation (default), or random words of their lengths (before 2026-12-01)")
    ap.add_argument("--batches", default="auto", help="comma-separated: auto and/or numbers (default auto)")
    ap.add_argument("--max-new-tokens", type=int, default=256, help="the CLI default; rows stop before it")
    ap.add_argument("--workdir", default=None, help="where 8bit/4bit load the random model from (default tmp)")
    ap.add_argument("--out", default=None, help="append JSON lines here")
    ap.add_argument("--profile", action="store_true", help="after each batch's rows, run the harness once more "
                    "under the torch profiler: device-kernel seconds and launches, and the top operators")
    ap.add_argument("--sync-check", action="store_true", help="after each batch's rows (GPU), run the harness once "
                    "more with torch's sync debugging: where the host waited for the device, and how often")
    for flag, path, _change, what in VARIANTS:
        ap.add_argument("--" + flag.replace("_", "-"), action="store_true", help=f"also the harness with {what} "
                        f"(path {path})")
    ap.add_argument("--check-attention", action="store_true", help="after each batch's rows, the model's own "
                    "greedy tokens with variable-length and with sdpa attention, compared item by item")
    ap.add_argument("--no-generate", action="store_true", help="skip plain generate's timed rows (the anchor)")
    ap.add_argument("--check-graphs", action="store_true", help="after each batch's rows, the model's own greedy "
                    "tokens with and without CUDA graphs, compared item by item")
    ap.add_argument("--budget-s", type=float, default=540, help="stop starting settings after this (the device "
                    "call's limit is 600 s)")
    ap.add_argument("--reserve-s", type=float, default=45, help="time a setting needs at least")
    ap.add_argument("--smoke", action="store_true", help="tiny shape, 12 items, bf16, on the CPU, in seconds")
    ap.add_argument("--write-lengths", action="store_true", help="regenerate hangzhou_lengths.json and exit")
    ap.add_argument("--sharded", action="store_true", help="issue 14: the harness path sharded over the ranks "
                    "of a torchrun launch (bf16; --items questions)")
    ap.add_argument("--gens-out", default=None, help="with --sharded: rank 0 writes every generation here "
                    "(compare two with benchmarks/gpu/generate.py --compare)")
    args = ap.parse_args(argv)
    if args.write_lengths:
        return write_lengths()
    if args.smoke:
        import torch

        torch.set_num_threads(1)
        args.shape, args.modes, args.items, args.batches = "tiny", "bf16", 8, "auto,3"
    if args.sharded:
        run_sharded(args)
    else:
        run(args)


def run(args: argparse.Namespace) -> None:
    import torch

    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    args.clock = Clock(args.budget_s, args.reserve_s)

    def emit(row: dict[str, Any]) -> None:
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")

    t0 = time.perf_counter()
    built: tuple[Any, Any] | None = build(args.shape, device)
    floors = Floors.measure(built[0], device)
    modes = sorted((m.strip() for m in args.modes.split(",")), key=lambda m: m != "bf16")  # bf16 first
    work = workload(args.items, SHAPES[args.shape][5], prompts=args.prompts)
    work_dir = Path(args.workdir or tempfile.mkdtemp(prefix="txt2sql-gen-"))
    saved = None
    if any(m != "bf16" for m in modes):  # loaded again from disk (quantised on loading)
        built[0].save_pretrained(work_dir)  # type: ignore[index]
        built[1].save_pretrained(work_dir)  # type: ignore[index]
        saved = work_dir
    emit({"shape": args.shape, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
          "torch": torch.__version__, "copy_gb_s": round(floors.bandwidth / 1e9, 1),
          "matmul_tflop_s": round(floors.flops / 1e12, 1), "linear_params": floors.linear_params,
          "prompts": args.prompts, "items": len(work.prompts), "useful_tokens": work.useful,
          "prompt_tokens": work.prompt_tokens, "distinct_prompt_tokens": work.distinct_prompt_tokens,
          "build_s": round(time.perf_counter() - t0, 1), "weights_gib": round(weight_bytes(built[0]) / 2**30, 2)})  # type: ignore[index]
    try:
        for mode in modes:
            if not args.clock.left(f"loading {mode}", emit):
                break
            t1 = time.perf_counter()
            backend = load_mode(mode, args.shape, device, saved, built if mode == "bf16" else None)
            built = None
            emit({"shape": args.shape, "mode": mode, "load_s": round(time.perf_counter() - t1, 1),
                  "weights_gib": round(weight_bytes(backend.model) / 2**30, 2)})
            bench_mode(args, mode, backend, work, floors, emit)
            backend.close()
            del backend
            settle(device)
    finally:
        if not args.workdir:
            shutil.rmtree(work_dir, ignore_errors=True)


def run_sharded(args: argparse.Namespace) -> None:
    """``--sharded`` (issue 14): the harness path over ``--items`` questions, sharded across the ranks of a
    ``torchrun`` launch exactly as ``python -m harness eval`` shards them (balanced by prompt length,
    gathered on rank 0), or on one process without a launcher. Rank 0 prints one line: wall time from a
    barrier to the gathered results, useful tok/s. Every rank builds the same random weights (seed 0)."""
    import torch

    from harness import distributed
    from harness.models.hf import HFBackend

    group = distributed.init()
    world, rank = (group.world, group.rank) if group else (1, 0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = build(args.shape, device)
    backend = HFBackend(model, tok, spec=f"random:{args.shape}", fingerprint="random")
    work = workload(args.items, SHAPES[args.shape][5], prompts=args.prompts)
    warm_up(backend, work, 0, args.max_new_tokens)
    # the engine's row index counts the prompts this process passes: its shard, or all of them in order
    mine = (distributed.shards([len(p.identity()) for p in work.prompts], world)[rank] if group
            else list(range(len(work.prompts))))
    stops = torch.tensor([work.stops[i] for i in mine], device=model.device)
    question = torch.tensor(mine, device=model.device)
    backend.logits_hook = lambda logits, items, counts: force(logits, stops[items], counts, question[items])
    print(json.dumps({"rank": rank, "items": len(mine), "weights_sum": weights_sum(model)}), flush=True)
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=0)
    if group:
        distributed.gather(None, group)  # start together
    _sync(device)
    t0 = time.perf_counter()
    gens = _generate_all(backend, work, config, group)
    _sync(device)
    wall = time.perf_counter() - t0
    free = None
    if args.gens_out:  # the model's own greedy choices too (no forcing): the numerics, not only the plumbing
        backend.logits_hook = None
        free = _generate_all(backend, work, GenerationConfig(max_new_tokens=32, batch_size=0), group)
    if rank == 0 and gens is not None:
        line = json.dumps({"shape": args.shape, "path": "harness-sharded", "world": world, "items": len(gens),
                           "useful_tokens": work.useful, "wall_s": round(wall, 2),
                           "useful_tok_s": round(work.useful / wall, 1), "batch_rank0": backend.last_run["slots"],
                           "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"})
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
        if args.gens_out and free is not None:
            _write_generations(args.gens_out, gens)
            _write_generations(args.gens_out.removesuffix(".jsonl") + "-free.jsonl", free)
    distributed.finish()


def _generate_all(backend: Any, work: Workload, config: GenerationConfig, group: Any) -> list[Any] | None:
    """Every generation (on rank 0; None on the other ranks of a launch)."""
    from harness import distributed

    if group:
        return distributed.generate_sharded(backend, work.prompts, config, None, group)
    return backend.generate(work.prompts, config)


def _write_generations(path: str, gens: list[Any]) -> None:
    with open(path, "w") as f:
        for g in gens:
            f.write(json.dumps({"id": g.id, "text": g.text, "finish_reason": g.finish_reason,
                                "tokens_out": g.tokens_out}) + "\n")


def weights_sum(model: Any) -> float:
    """A fingerprint of the random weights: every rank must build the same model."""
    return float(sum(p.detach().float().sum() for p in model.parameters()))


def write_lengths() -> None:
    """Token lengths of the bundled benchmark's prompts (template seed-zh) and gold SQL (+1 for EOS), and the
    prompts' token ids, with the embedded model's tokenizer."""
    from transformers import AutoTokenizer

    from harness.benchmark.loader import default_benchmark_dir, load_benchmark
    from harness.models.embedded import DEFAULT_EMBEDDED, EMBEDDED, find_gguf
    from harness.prompts.templates import get_template, render_prompt

    gguf = find_gguf(EMBEDDED[DEFAULT_EMBEDDED])
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    bench = load_benchmark(default_benchmark_dir(), "test")
    template = get_template(None)
    prompt_ids = [tok(render_prompt(q, template).text)["input_ids"] for q in bench.questions]
    prompts = [len(ids) for ids in prompt_ids]
    stops = [len(tok(q.gold, add_special_tokens=False)["input_ids"]) + 1 for q in bench.questions]
    source = json.loads(LENGTHS.read_text())["source"] if LENGTHS.exists() else ""
    LENGTHS.write_text(json.dumps({"source": source, "prompt_tokens": prompts, "stop_tokens": stops,
                                   "prompt_ids": prompt_ids}, separators=(",", ":")) + "\n")
    print(f"{LENGTHS}: {len(prompts)} questions, prompts {min(prompts)}-{max(prompts)} tokens, "
          f"stops {min(stops)}-{max(stops)}")


if __name__ == "__main__":
    main()
