"""LoRA fine-tuning with the same prompt template evaluation uses (``txt2sql finetune``)."""

from harness.finetune.data import encode_example
from harness.finetune.devscore import DevScore, DevSet
from harness.finetune.trainer import CURVE_FILE, FinetuneConfig, FinetuneResult, finetune_questions

__all__ = ["CURVE_FILE", "DevScore", "DevSet", "FinetuneConfig", "FinetuneResult", "encode_example",
           "finetune_questions"]
