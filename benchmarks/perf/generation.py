"""Measure the hf backend's load time, throughput and peak GPU memory on a random-init model of a real
model's shape (no model hub needed): the figures the README quotes for bf16 and 8-bit.

    python benchmarks/perf/generation.py --shape codellama-13b --modes 8bit,bf16 --out figures.jsonl

On the CPU, `--shape smollm2-135m --modes bf16 --batches 1,8` measures a model of the embedded model's shape.

Each mode prints (and appends to --out) one JSON line as soon as it is measured. Outputs of random
weights are meaningless; stopping on ';' and loops is switched off so every item generates
``--max-new-tokens`` tokens and tokens/s compares like with like.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

from harness.models.base import BackendOptions, GenerationConfig, Prompt

SHAPES = {  # hidden, intermediate, layers, heads, kv heads, vocab
    "codellama-7b": (4096, 11008, 32, 32, 32, 32016),
    "codellama-13b": (5120, 13824, 40, 40, 40, 32016),
    "smollm2-135m": (576, 1536, 30, 9, 3, 49152),
    "tiny": (64, 128, 2, 2, 2, 1000),
}


def build(shape: str, path: Path) -> None:
    """Random-init Llama of the given shape saved in bf16, with a word-level tokenizer of its vocabulary."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    hidden, inter, layers, heads, kv, vocab = SHAPES[shape]
    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab,
                      max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, dtype="bfloat16")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # initialise in bf16: half the memory and time
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    model.save_pretrained(path)
    del model
    words = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(3, vocab)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(path)
    if device == "cuda":
        torch.cuda.empty_cache()


def measure(path: Path, mode: str, prompt_tokens: int, max_new: int, batches: list[int]) -> dict:
    import torch

    from harness.models.hf import load_hf_backend

    options = BackendOptions(dtype="bf16", quantize=None if mode == "bf16" else mode)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    backend = load_hf_backend(str(path), options)
    row: dict = {"mode": mode, "load_s": round(time.perf_counter() - t0, 1)}
    if cuda:
        row["weights_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
    vocab = backend.model.config.vocab_size
    rng = random.Random(0)
    for bs in batches:
        prompts = [Prompt(str(i), " ".join(f"w{rng.randrange(3, vocab)}" for _ in range(prompt_tokens)))
                   for i in range(bs)]
        config = GenerationConfig(max_new_tokens=max_new, batch_size=bs, stop_at_statement_end=False,
                                  stop_on_loop=False)
        backend.generate(prompts[:1], GenerationConfig(max_new_tokens=4, batch_size=1))  # warm-up
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        gens = backend.generate(prompts, config)
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        out = sum(g.tokens_out for g in gens)
        row[f"bs{bs}_tok_s"] = round(out / dt, 1)
        row[f"bs{bs}_s"] = round(dt, 2)
        if cuda:
            row[f"bs{bs}_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    row.update(prompt_tokens=prompt_tokens, max_new_tokens=max_new, device=torch.cuda.get_device_name()
               if cuda else "cpu", torch=torch.__version__)
    backend.close()
    del backend
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="codellama-13b")
    ap.add_argument("--modes", default="bf16,8bit", help="comma-separated: bf16, 8bit, 4bit")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--workdir", default=None, help="where the random model is written (default: a tmp dir)")
    ap.add_argument("--out", default=None, help="append JSON lines here")
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="txt2sql-measure-"))
    t0 = time.perf_counter()
    build(args.shape, work)
    print(json.dumps({"shape": args.shape, "build_s": round(time.perf_counter() - t0, 1)}), flush=True)
    try:
        for mode in args.modes.split(","):
            try:
                row = {"shape": args.shape, **measure(work, mode.strip(), args.prompt_tokens,
                                                      args.max_new_tokens,
                                                      [int(b) for b in args.batches.split(",")])}
            except Exception as exc:  # report and go on with the next mode
                row = {"shape": args.shape, "mode": mode, "error": f"{type(exc).__name__}: {exc}"[:500]}
            line = json.dumps(row)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(line + "\n")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
