"""harness.models.prefix on its own: block keys, the pool's size, the order of a refill, and what the pool
keeps and frees. The engine's outputs with the cache are tested against the plain path in test_engine.py."""

from __future__ import annotations

import pytest

from harness.models import prefix
from harness.models.prefix import BLOCK, PrefixStore, block_keys, checked_keys, pool_tokens

torch = pytest.importorskip("torch")

SHARED = list(range(100, 100 + 2 * BLOCK))  # two blocks every prompt below opens with


def prompt(*tail: int) -> list[int]:
    return SHARED + list(tail)


def test_equal_prefixes_have_equal_keys_and_the_last_token_is_never_in_a_block():
    a, b = prompt(*range(BLOCK), 7), prompt(*range(BLOCK), 8)
    assert block_keys(a) == block_keys(b) and len(block_keys(a)) == 3
    assert block_keys(a[:-1])[:2] == block_keys(a)[:2]
    assert len(block_keys(list(range(BLOCK)))) == 0  # 16 tokens: the 16th must be computed
    assert len(block_keys(list(range(BLOCK + 1)))) == 1
    assert block_keys([1] + a[1:])[0] != block_keys(a)[0]


def test_pool_holds_the_blocks_two_prompts_share_at_most_the_cap(monkeypatch):
    encoded = [prompt(1, 2), prompt(3), list(range(60))]
    assert pool_tokens(encoded) == 2 * BLOCK
    assert pool_tokens([prompt(1)]) == 0
    monkeypatch.setattr(prefix, "MAX_POOL_TOKENS", BLOCK)
    assert pool_tokens(encoded) == BLOCK


def test_a_refill_prefills_one_prompt_per_missing_shared_block_first():
    encoded = [prompt(1), prompt(2), prompt(3), list(range(500, 540))]
    store = PrefixStore(encoded, [0, 1, 2, 3])
    ready, later = store.order([0, 1, 2, 3])
    assert ready == [0, 3] and later == [1, 2]  # 0 computes the shared blocks; 3 shares nothing


def test_admitted_blocks_are_kept_for_waiting_prompts_and_freed_after_the_last():
    encoded = [prompt(1), prompt(2), prompt(3)]
    store = PrefixStore(encoded, [0, 1, 2])
    width = len(encoded[0])
    keys = [torch.arange(width, dtype=torch.float32).reshape(1, 1, width, 1)]
    store.admit([0], keys, [k + 1000 for k in keys], [width])
    assert store.stored(1) == store.stored(2) == 2
    past_k, past_v = store.gather([1], [2 * BLOCK])
    assert past_k[0].flatten().tolist() == list(range(2 * BLOCK))  # the first 32 columns of prompt 0
    assert past_v[0].flatten().tolist() == [1000.0 + t for t in range(2 * BLOCK)]
    store.admit([1], keys, keys, [width])
    assert store.stored(2) == 2  # prompt 2 still waits for them
    store.admit([2], keys, keys, [width])
    assert not store.slot_of and len(store.free) == store.capacity // BLOCK


def test_a_hash_collision_costs_a_recomputation_not_another_prompts_keys(monkeypatch):
    """Two different first blocks forced onto one key: the second prompt keeps no block from it on."""
    a, b = prompt(1), [7] * BLOCK + SHARED[BLOCK:] + [1]
    monkeypatch.setattr(prefix, "block_keys", lambda ids: [11, 22][:(len(ids) - 1) // BLOCK])
    assert checked_keys([a, b]) == [[11, 22], []]
    assert checked_keys([a, list(a)]) == [[11, 22], [11, 22]]
