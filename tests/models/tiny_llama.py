"""A tiny random-init Llama whose greedy output is scripted, built at test time in a fraction of a second.

Attention and MLP outputs are zeroed, so the residual stream is the current token's embedding; the
embeddings are one-hot and ``lm_head`` maps each token to its scripted successor. The model is therefore
a bigram table: greedy generation follows ``NEXT`` from the prompt's last token, whatever came before it
(so batching, padding side and stopping can be checked exactly).
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")  # noqa: E402
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
WORDS = ["SELECT", "a", "FROM", "t", ";", "n1", "l1", "l2", "l3", "e1", "m0", "m1", "m2", "```",
         "go_sql", "go_loop", "go_eos", "go_long", "q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8", "q9",
         "hello", "world", "please", "answer"]
VOCAB = SPECIALS + WORDS
HIDDEN = 64  # >= len(VOCAB): one-hot embeddings
NEXT = {
    "go_sql": "SELECT", "SELECT": "a", "a": "FROM", "FROM": "t", "t": ";", ";": "n1", "n1": "</s>",
    "go_loop": "l1", "l1": "l2", "l2": "l3", "l3": "l1",
    "go_eos": "e1", "e1": "</s>",
    "go_long": "q1", **{f"q{i}": f"q{i + 1}" for i in range(1, 9)}, "q9": "</s>",
    "m0": "m1", "m1": "m2", "m2": "```", "```": "</s>",
}


def build_tokenizer(pad: bool = True, chat_template: str | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    kwargs = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    if pad:
        kwargs["pad_token"] = "<pad>"
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    if chat_template:
        fast.chat_template = chat_template
    return fast


def build_model(hidden: int = HIDDEN, vocab: int = len(VOCAB), heads: int = 2, kv_heads: int = 2):
    """The scripted bigram model when hidden >= vocab; otherwise a plain random-init Llama (``kv_heads <
    heads``: grouped-query attention)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    if hidden >= vocab:
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
            emb = torch.zeros(vocab, hidden)
            emb[torch.arange(vocab), torch.arange(vocab)] = 1.0
            model.model.embed_tokens.weight.copy_(emb)
            head = torch.zeros(vocab, hidden)
            for src in range(vocab):
                dst = NEXT.get(VOCAB[src], "</s>") if src < len(VOCAB) else "</s>"
                head[VOCAB.index(dst), src] = 10.0
            model.lm_head.weight.copy_(head)
    model.generation_config.pad_token_id = 0
    return model


def save_tiny(path: Path, *, hidden: int = HIDDEN, pad: bool = True, chat_template: str | None = None,
              heads: int = 2, kv_heads: int = 2) -> Path:
    build_model(hidden, heads=heads, kv_heads=kv_heads).save_pretrained(path)
    build_tokenizer(pad=pad, chat_template=chat_template).save_pretrained(path)
    return path
