"""LoRA fine-tuning on a benchmark split, with the SAME prompt template evaluation uses.

The training text of each item is ``template.format_training_example(context, question, gold, eos)``,
i.e. exactly the evaluation prompt followed by the answer; the loss is taken on the answer only. The
adapter is written with a plain ``save_pretrained`` (never a patched ``state_dict``: that is how the
seed's adapter ended up with an unreadable safetensors header) together with ``txt2sql_template.json``,
which ``lora:`` reads back so evaluation uses the template the adapter was trained with.

    txt2sql finetune --benchmark fixtures/hangzhou --split train --base-model codellama/CodeLlama-13b-hf \\
        --out runs/adapter --steps 300
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.benchmark.model import Question
from harness.errors import ModelBackendError
from harness.prompts.templates import TEMPLATE_FILE, PromptTemplate, get_template

log = logging.getLogger(__name__)

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 200
    lr: float = 2e-4
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    batch_size: int = 4
    max_length: int = 1024
    seed: int = 0
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES


@dataclass(frozen=True)
class FinetuneResult:
    adapter_dir: Path
    steps: int
    examples: int
    first_loss: float
    last_loss: float
    seconds: float


def encode_example(tokenizer: Any, template: PromptTemplate, q: Question, max_length: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with the prompt masked out (-100): the model learns the answer only."""
    eos = tokenizer.eos_token or ""
    if template.chat and getattr(tokenizer, "chat_template", None):
        msgs = [{"role": r, "content": c} for r, c in template.messages(q.context, q.question)]
        prompt = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        full = prompt + q.gold.strip() + eos
        special = False
    else:
        prompt = template.render(q.context, q.question)
        full = template.format_training_example(q.context, q.question, q.gold, eos=eos)
        special = True
    prompt_ids = tokenizer(prompt, add_special_tokens=special)["input_ids"]
    ids = tokenizer(full, add_special_tokens=special)["input_ids"]
    if ids[:len(prompt_ids)] != prompt_ids:  # a merge across the prompt/answer boundary: mask conservatively
        n = next((i for i, (a, b) in enumerate(zip(ids, prompt_ids, strict=False)) if a != b), len(prompt_ids))
    else:
        n = len(prompt_ids)
    labels = [-100] * n + ids[n:]
    if len(ids) > max_length:  # keep the answer: drop from the left of the prompt
        ids, labels = ids[-max_length:], labels[-max_length:]
    return ids, labels


def finetune_questions(questions: Sequence[Question], *, base: str, out: Path | str,
                       template: str | PromptTemplate | None = None, config: FinetuneConfig = FinetuneConfig(),
                       dtype: str = "auto") -> FinetuneResult:
    """Train a LoRA adapter on ``questions`` (their first gold) and save it with its template."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.models.hf import resolve_dtype

    if not questions:
        raise ModelBackendError("no training questions: the split is empty")
    from harness.models.embedded import resolve_model_ref

    tmpl = template if isinstance(template, PromptTemplate) else get_template(template)
    out = Path(out)
    base_ref, base = base, resolve_model_ref(base)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    on_cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=resolve_dtype(dtype, on_cuda))
    if on_cuda:
        model = model.to("cuda")
    model = get_peft_model(model, LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                             target_modules=list(config.target_modules), task_type="CAUSAL_LM"))
    examples = [encode_example(tokenizer, tmpl, q, config.max_length) for q in questions]
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    model.train()
    losses: list[float] = []
    order: list[int] = []
    t0 = time.perf_counter()
    for step in range(config.steps):
        if len(order) < config.batch_size:
            fresh = list(range(len(examples)))
            rng.shuffle(fresh)
            order += fresh
        batch = [examples[i] for i in order[:config.batch_size]]
        del order[:config.batch_size]
        width = max(len(ids) for ids, _ in batch)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
        device = model.device
        loss = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                     labels=labels.to(device)).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
        losses.append(loss.item())
        if step % 10 == 0 or step == config.steps - 1:
            log.info("step %d/%d loss %.4f", step + 1, config.steps, losses[-1])
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # a plain save: adapter_config.json + adapter_model.safetensors
    if base_ref != base:  # record the portable name (embedded:...), not this machine's cache path
        cfg_path = out / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg["base_model_name_or_path"] = base_ref
        cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    tmpl.save(out / TEMPLATE_FILE)
    return FinetuneResult(out, config.steps, len(examples), losses[0] if losses else float("nan"),
                          losses[-1] if losses else float("nan"), time.perf_counter() - t0)


def finetune(benchmark_dir: Path | str, split: str = "train", *, base: str, out: Path | str,
             template: str | None = None, config: FinetuneConfig = FinetuneConfig(),
             dtype: str = "auto") -> FinetuneResult:
    """Fine-tune on one split of a benchmark directory (the split file ``<split>.jsonl``)."""
    from harness.benchmark.loader import load_benchmark

    bench = load_benchmark(Path(benchmark_dir), split)
    return finetune_questions(bench.questions, base=base, out=out, template=template, config=config, dtype=dtype)


def finetune_from_args(args: argparse.Namespace) -> int:
    """``txt2sql finetune``: benchmark, split, base_model, out, template, steps, lr, lora_r, limit."""
    from harness.benchmark.loader import load_benchmark

    bench_dir = args.benchmark
    if bench_dir is None:
        from harness.benchmark.loader import default_benchmark_dir

        bench_dir = default_benchmark_dir()
    bench = load_benchmark(Path(bench_dir), args.split)
    questions = list(bench.questions)[:args.limit] if getattr(args, "limit", None) else list(bench.questions)
    d = FinetuneConfig()
    cfg = FinetuneConfig(steps=args.steps, lr=args.lr, r=getattr(args, "lora_r", d.r),
                         alpha=2 * getattr(args, "lora_r", d.r))
    res = finetune_questions(questions, base=args.base_model, out=args.out, template=args.template,
                             config=cfg)
    print(f"adapter written to {res.adapter_dir} ({res.examples} examples, {res.steps} steps, loss "
          f"{res.first_loss:.3f} -> {res.last_loss:.3f}, {res.seconds:.0f} s); evaluate with "
          f"--model lora:{res.adapter_dir}")
    return 0


