"""Variable-length attention over the slot cache (``harness.models.varlen``), on the CPU through
``reference_kernel``: the packing, the (row, kv head) sequences, the writes into the slots and the engine's
varlen prefill and decoding, against the masked (sdpa) path, item by item in fp32.

On a GPU the same path runs flash attention's kernel; ``benchmarks/perf/generation.py --check-attention``
compares the two paths there.
"""

from __future__ import annotations

import pytest

from harness.models import varlen
from harness.models.base import BackendOptions, GenerationConfig
from harness.models.hf import load_hf_backend
from tests.models.test_engine import random_prompts, shared_prompts
from tests.models.tiny_llama import save_tiny

torch = pytest.importorskip("torch")


@pytest.fixture
def reference_kernel():
    before = varlen.use_kernel(varlen.reference_kernel)
    yield
    varlen.use_kernel(before)


def naive(q, k, v, causal_offset=None):
    """Attention of q [n, D] over k/v [m, D] (query i sees keys <= causal_offset + i, if given)."""
    scores = (q @ k.T) / q.shape[-1] ** 0.5
    if causal_offset is not None:
        keep = torch.arange(k.shape[0])[None, :] <= causal_offset + torch.arange(q.shape[0])[:, None]
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, -1) @ v


def test_reference_kernel_reads_each_sequence_own_used_keys_bottom_right_causal():
    torch.manual_seed(0)
    groups, dim, cap = 3, 8, 10
    k, v = torch.randn(4 * cap, 1, dim), torch.randn(4 * cap, 1, dim)
    q = torch.randn(2 + 3, groups, dim)
    cu_q = torch.tensor([0, 2, 5], dtype=torch.int32)
    cu_k = torch.tensor([cap, 3 * cap, 4 * cap], dtype=torch.int32)  # sequences in regions 1 and 3
    used = torch.tensor([6, 4], dtype=torch.int32)
    out = varlen.reference_kernel(q, k, v, cu_q, cu_k, used, 3, cap, True, dim ** -0.5)
    for g in range(groups):
        want0 = naive(q[0:2, g], k[cap:cap + 6, 0], v[cap:cap + 6, 0], causal_offset=6 - 2)
        want1 = naive(q[2:5, g], k[3 * cap:3 * cap + 4, 0], v[3 * cap:3 * cap + 4, 0], causal_offset=4 - 3)
        torch.testing.assert_close(out[0:2, g], want0)
        torch.testing.assert_close(out[2:5, g], want1)


def test_prefill_batch_orders_queries_by_row_then_kv_head_and_points_into_each_slot():
    batch = varlen.prefill_batch(slots=[1, 4], starts=[3, 0], lengths=[5, 2], kv_heads=2, capacity=8, device="cpu")
    p = batch.packed
    assert p.token_rows.tolist() == [1, 1, 4, 4]
    assert p.token_cols.tolist() == [3, 4, 0, 1]
    assert p.query_tokens.tolist() == [0, 1, 0, 1, 2, 3, 2, 3]
    assert p.query_heads.tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    assert batch.cu_q.tolist() == [0, 2, 4, 6, 8]
    assert batch.cu_k.tolist() == [(1 * 2 + 0) * 8, (1 * 2 + 1) * 8, (4 * 2 + 0) * 8, (4 * 2 + 1) * 8, (4 * 2 + 2) * 8]
    assert batch.used_k.tolist() == [5, 5, 2, 2]
    assert (batch.max_q, batch.max_k) == (2, 5)
    with pytest.raises(ValueError):
        varlen.prefill_batch(slots=[4, 1], starts=[0, 0], lengths=[2, 2], kv_heads=1, capacity=8, device="cpu")


@pytest.mark.parametrize("slots", [1, 3])
def test_used_keys_of_a_decoding_step_are_contiguous_int32(slots):
    """Flash attention refuses a strided ``seqused_k`` (on the H200 a one-slot pass failed so)."""
    used = varlen.used_for_decoding(torch.arange(slots) + 4, kv_heads=5)
    assert used.is_contiguous() and used.dtype == torch.int32
    assert used.tolist() == [p + 5 for p in range(slots) for _ in range(5)]


@pytest.fixture(scope="module")
def gqa_fp32(tmp_path_factory):
    """A random-init tiny Llama with grouped-query attention (4 query heads, 2 kv heads)."""
    path = save_tiny(tmp_path_factory.mktemp("gqa-llama"), hidden=32, heads=4, kv_heads=2)
    return load_hf_backend(str(path), BackendOptions(dtype="fp32"))


def generate(backend, prompts, config, use_varlen):
    backend.varlen = use_varlen
    try:
        gens = backend.generate(prompts, config)
        return [(g.text, g.finish_reason, g.tokens_out) for g in gens], dict(backend.last_run)
    finally:
        backend.varlen = None


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_varlen_path_equals_the_masked_path_item_by_item(gqa_fp32, reference_kernel, batch_size):
    """Refills into freed slots (1 and 3 slots), one prefill of everything (16), compaction, stop rules."""
    prompts = random_prompts(14, seed=3)
    config = GenerationConfig(max_new_tokens=20, batch_size=batch_size)
    masked, masked_run = generate(gqa_fp32, prompts, config, False)
    packed, packed_run = generate(gqa_fp32, prompts, config, True)
    assert packed == masked
    assert packed_run["varlen"] and not masked_run["varlen"]
    assert packed_run["prefill_tokens"] == sum(len(gqa_fp32.encode(p)) for p in prompts)  # no padding


@pytest.mark.parametrize("batch_size", [2, 16])
def test_varlen_prefill_reuses_shared_prefixes_copied_into_the_slots(gqa_fp32, reference_kernel, batch_size):
    prompts = shared_prompts(16, seed=2)
    config = GenerationConfig(max_new_tokens=10, batch_size=batch_size, stop_on_loop=False,
                              stop_at_statement_end=False)
    masked, masked_run = generate(gqa_fp32, prompts, config, False)
    packed, packed_run = generate(gqa_fp32, prompts, config, True)
    assert packed == masked
    total = sum(len(gqa_fp32.encode(p)) for p in prompts)
    assert packed_run["reused_tokens"] >= 0.5 * total
    assert packed_run["prefill_tokens"] == total - packed_run["reused_tokens"]


def test_a_freed_slot_starts_over_at_one_column(gqa_fp32, reference_kernel, monkeypatch):
    """Decoding steps of the varlen path: each row reads its own position + 1 keys; a freed slot starts over at
    one (its writes land in column 0, 1, ...) instead of reading its old row's keys. Item 0 is
    made to end (EOS) with its 3rd token, item 1 runs on; no compaction, so the freed slot stays in the batch."""
    seen: list[list[int]] = []
    original = varlen.used_for_decoding

    def spy(pos, kv_heads):
        used = original(pos, kv_heads)
        seen.append(used[::kv_heads].tolist())
        return used

    def end_item_0(logits, items, counts):
        eos = next(iter(gqa_fp32.eos_ids))
        stop = (items == 0) & (counts + 1 >= 3)
        logits[stop, eos] = torch.finfo(logits.dtype).max
        return logits

    monkeypatch.setattr(varlen, "used_for_decoding", spy)
    monkeypatch.setattr(gqa_fp32, "logits_hook", end_item_0)
    monkeypatch.setattr(gqa_fp32, "compact", False)
    prompts = random_prompts(2, seed=5)
    config = GenerationConfig(max_new_tokens=12, batch_size=2, stop_on_loop=False, stop_at_statement_end=False)
    gens = generate(gqa_fp32, prompts, config, True)[0]
    lengths = [len(gqa_fp32.encode(p)) for p in prompts]
    assert [n for _t, _r, n in gens] == [3, 12]
    first = sorted(seen[0])
    assert first == sorted(n + 1 for n in lengths)  # the first step: each prompt plus the new token
    # token 1 comes from the prefill, tokens 2 and 3 from steps 0 and 1; from step 2 on item 0's slot reads 1
    slot = seen[0].index(lengths[0] + 1)
    assert seen[1][slot] == lengths[0] + 2
    assert [step[slot] for step in seen[2:]] == list(range(1, len(seen) - 1)), seen
    assert [step[1 - slot] for step in seen] == [lengths[1] + 1 + k for k in range(len(seen))]


@pytest.mark.parametrize("use_varlen", [False, True])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_pipelined_steps_give_the_same_outputs(gqa_fp32, reference_kernel, use_varlen, batch_size):
    """Each step launched before the previous one's tokens are read (the GPU default): a stopped row is found
    one step late and its extra token dropped; refills and compaction wait for no step in flight."""
    prompts = random_prompts(14, seed=6)
    config = GenerationConfig(max_new_tokens=20, batch_size=batch_size)
    runs = []
    for pipeline in (False, True):
        gqa_fp32.pipeline = pipeline
        try:
            runs.append(generate(gqa_fp32, prompts, config, use_varlen))
        finally:
            gqa_fp32.pipeline = None
    (plain, plain_run), (piped, piped_run) = runs
    assert piped == plain
    assert {reason for _t, reason, _n in plain} >= {"stop"}, plain
    assert plain_run["steps"] <= piped_run["steps"] <= plain_run["steps"] + len(prompts) + 2
