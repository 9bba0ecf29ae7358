"""The team's fine-tuning recipe, replayed with its four mistakes, so the harness can be shown catching it.

What the team did (docs/case-study.md), each kept here on purpose:
  1. a training prompt that differs from the evaluation prompt (other wording, a ```sql fence and an
     indented schema at training only; evaluation uses the seed-zh template);
  2. ``labels = input_ids`` over the whole sequence: the model is trained to write prompts, and padding;
  3. left padding with pad id 0;
  4. no EOS after the answer: nothing teaches the model to stop.
Their LoRA settings otherwise: peft's defaults for Llama (q_proj, v_proj), r 8, alpha 16, AdamW at a
constant 2e-4, no warm-up, batch 16, no dev set, a plain ``save_pretrained`` (and no template record).

    python benchmarks/case_study/team_recipe.py --out adapters/team-recipe --epochs 2

Do not use this to train anything you want to deploy: ``txt2sql finetune`` is the right recipe.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

TEAM_TRAINING_PROMPT = ("以下是数据库的表结构：\n{context}\n\n请根据表结构回答问题：{question}\n"
                        "### Answer:\n```sql\n{answer}\n```")


def team_text(context: str, question: str, answer: str) -> str:
    indented = "\n".join("    " + line for line in context.strip().splitlines())
    return TEAM_TRAINING_PROMPT.format(context=indented, question=question.strip(), answer=answer.strip())


def main() -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.benchmark.loader import default_benchmark_dir, load_benchmark
    from harness.models.embedded import resolve_model_ref

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-model", default="embedded")
    p.add_argument("--benchmark", type=Path, default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    base = resolve_model_ref(a.base_model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(base)
    tok.pad_token_id = 0  # mistake 3: pad id 0, on the left
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    model = get_peft_model(model.to(device), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                                        target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    questions = load_benchmark(a.benchmark or default_benchmark_dir(), "train").questions
    texts = [team_text(q.context, q.question, q.gold) for q in questions]  # mistakes 1 and 4: no EOS
    optim = torch.optim.AdamW([x for x in model.parameters() if x.requires_grad], lr=a.lr)
    steps = math.ceil(a.epochs * len(texts) / a.batch_size)
    order: list[int] = []
    model.train()
    t0 = time.perf_counter()
    losses = []
    for step in range(steps):
        if len(order) < a.batch_size:
            fresh = list(range(len(texts)))
            rng.shuffle(fresh)
            order += fresh
        batch = [texts[i] for i in order[:a.batch_size]]
        del order[:a.batch_size]
        enc = tok(batch, return_tensors="pt", padding=True, truncation=True, max_length=a.max_length).to(device)
        labels = enc["input_ids"].clone()  # mistake 2: the loss covers the prompt and the padding too
        loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
        losses.append(float(loss))
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step + 1}/{steps} loss {losses[-1]:.4f}", flush=True)
    model.save_pretrained(a.out)
    cfg_path = a.out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = a.base_model  # portable, as the harness records it
    cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    (a.out / "team_recipe_log.json").write_text(json.dumps(
        {"steps": steps, "seconds": round(time.perf_counter() - t0, 1), "first_loss": losses[0],
         "last_loss": losses[-1], "epochs": a.epochs, "lr": a.lr, "batch_size": a.batch_size}, indent=2))
    print(f"team-recipe adapter in {a.out}: {steps} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}")


if __name__ == "__main__":
    main()
