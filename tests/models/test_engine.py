"""The slot engine against the old path (plain ``model.generate`` with a stopping criterion that decodes
the whole output at every step), item by item, on the tiny random-init Llama.

fp32: equal exactly. bf16: an item may differ only where the old path's top two logits were within the
bf16 rounding of each other at the first differing token (the batch-composition wobble), and most items
must not differ at all.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from harness.models.base import BackendOptions, GenerationConfig, Prompt
from harness.models.engine import Engine
from harness.models.hf import HFBackend, load_hf_backend
from harness.models.stopping import LOOP_CHECK_EVERY, RowStopper, prompt_opens_fence, sql_stop, token_loop
from tests.models.tiny_llama import WORDS, save_tiny

torch = pytest.importorskip("torch")

# Random-init logits are small; bf16 keeps 8 bits of mantissa, so logits near 1 round to ~2^-8 and a
# reduction over 32 channels in another order can move them by a few of those steps.
BF16_TIE = 0.04
MIN_BF16_EQUAL = 0.75


class OldStopper:
    """The pre-engine criterion: whole-text decode and a windowed loop rescan at every step."""

    def __init__(self, tokenizer, width: int, opened: bool, eos: set[int], config: GenerationConfig):
        self.tokenizer, self.width, self.opened, self.eos, self.config = tokenizer, width, opened, eos, config
        self.reason: str | None = None
        self.length: int | None = None

    def __call__(self, input_ids, scores, **kwargs):
        ids = input_ids[0, self.width:].tolist()
        if self.reason is None:
            self.reason = self._check(ids)
            self.length = len(ids) if self.reason else None
        return torch.tensor([self.reason is not None])

    def _check(self, ids: list[int]) -> str | None:
        if ids and ids[-1] in self.eos:
            return "stop"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if self.config.stop_at_statement_end and sql_stop(text, self.opened):
            return "stop"
        n = len(ids)
        if self.config.stop_on_loop and (n % LOOP_CHECK_EVERY == 0 or n >= self.config.max_new_tokens):
            if token_loop(ids) is not None:
                return "loop"
        return None


def old_path(backend: HFBackend, prompt: Prompt, config: GenerationConfig, scores: bool = False):
    """(text, finish_reason, tokens_out[, per-step logits]) from plain ``model.generate``, one prompt."""
    from transformers import StoppingCriteriaList

    ids = backend.encode(prompt)
    stopper = OldStopper(backend.tokenizer, len(ids), prompt_opens_fence(prompt.text), backend.eos_ids, config)
    with torch.inference_mode():
        out = backend.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=config.max_new_tokens, do_sample=False, temperature=None,
                                     top_p=None, top_k=None, pad_token_id=backend.tokenizer.pad_token_id,
                                     eos_token_id=sorted(backend.eos_ids),
                                     stopping_criteria=StoppingCriteriaList([stopper]),
                                     output_scores=scores, return_dict_in_generate=True)
    gen = out.sequences[0, len(ids):].tolist()
    n = stopper.length or len(gen)
    reason = stopper.reason or ("length" if n >= config.max_new_tokens else "stop")
    row = (backend.tokenizer.decode(gen[:n], skip_special_tokens=True), reason, n)
    return (row, [s[0] for s in out.scores], gen) if scores else row


def engine_ids(backend: HFBackend, prompts: list[Prompt], config: GenerationConfig,
               prefix_cache: bool = True) -> list[list[int]]:
    """Generated ids per prompt straight from the engine (EOS and max_new_tokens only)."""
    eos = frozenset(backend.eos_ids)
    engine = Engine(backend.model, pad_id=backend.tokenizer.pad_token_id,
                    config=replace(config, stop_on_loop=False), make_stopper=lambda item: RowStopper(
                        eos_ids=eos, max_new_tokens=config.max_new_tokens, decode=str, sql=None, stop_loop=False),
                    prefix_cache=prefix_cache)
    out: dict[int, list[int]] = {}
    for ended in engine.run([backend.encode(p) for p in prompts], config.batch_size):
        out.update((d.item, d.ids) for d in ended)
    return [out[i] for i in range(len(prompts))]


def random_prompts(n: int, seed: int = 0) -> list[Prompt]:
    rng = random.Random(seed)
    words = [w for w in WORDS if w != "```"]
    return [Prompt(str(i), " ".join(rng.choice(words) for _ in range(rng.randint(1, 40)))) for i in range(n)]


@pytest.fixture(scope="module")
def random_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("random-llama"), hidden=32)  # hidden < vocab: random weights


@pytest.fixture(scope="module")
def random_fp32(random_dir):
    return load_hf_backend(str(random_dir), BackendOptions(dtype="fp32"))


@pytest.mark.parametrize("config", [
    GenerationConfig(max_new_tokens=24, batch_size=3),
    GenerationConfig(max_new_tokens=20, batch_size=8, stop_on_loop=False, stop_at_statement_end=False),
    GenerationConfig(max_new_tokens=7, batch_size=1),
], ids=["refill-3-slots", "no-stop-rules", "one-slot"])
def test_fp32_equals_old_path_item_by_item(random_fp32, config):
    prompts = random_prompts(14)
    new = random_fp32.generate(prompts, config)
    old = [old_path(random_fp32, p, config) for p in prompts]
    assert [(g.text, g.finish_reason, g.tokens_out) for g in new] == old
    assert [g.id for g in new] == [p.id for p in prompts]
    reasons = {g.finish_reason for g in new}
    if config.stop_on_loop:  # the comparison covered more than one way to stop
        assert len(reasons) > 1, reasons


def test_rows_leave_early_and_others_take_their_slots(random_fp32):
    """20 prompts through 3 slots: far fewer steps than fixed batches waiting for their longest row."""
    prompts = random_prompts(20, seed=1)
    config = GenerationConfig(max_new_tokens=24, batch_size=3)
    gens = random_fp32.generate(prompts, config)
    steps = random_fp32.last_run["steps"]
    lengths = [g.tokens_out for g in gens]
    fixed = sum(max(lengths[i:i + 3]) for i in range(0, 20, 3))  # batches of 3 in order, each to its longest
    assert steps <= sum(lengths) / 3 + 24, (steps, sum(lengths))
    assert steps < fixed


def test_bf16_wobble_is_bounded(random_dir):
    """bf16: rows batched with different neighbours can round differently; each difference must sit on a
    near tie of the old path's logits, and most items must be equal."""
    backend = load_hf_backend(str(random_dir), BackendOptions(dtype="bf16"))
    config = GenerationConfig(max_new_tokens=12, batch_size=5, stop_on_loop=False, stop_at_statement_end=False)
    assert_bf16_bounded(backend, random_prompts(16, seed=2), config)


def assert_bf16_bounded(backend: HFBackend, prompts: list[Prompt], config: GenerationConfig) -> None:
    new = engine_ids(backend, prompts, config)
    equal = 0
    for p, new_ids in zip(prompts, new, strict=True):
        _row, scores, old_ids = old_path(backend, p, config, scores=True)
        if new_ids == old_ids:
            equal += 1
            continue
        k = next((i for i, (a, b) in enumerate(zip(old_ids, new_ids, strict=False)) if a != b),
                 min(len(old_ids), len(new_ids)))
        top2 = scores[k].float().topk(2).values
        assert float(top2[0] - top2[1]) <= BF16_TIE, (p.id, k, top2)
    assert equal >= MIN_BF16_EQUAL * len(prompts), equal


def shared_prompts(n: int, seed: int = 0) -> list[Prompt]:
    """Prompts as an evaluation makes them: one preamble for all, one of three "table" texts, then a short
    question, so that whole blocks of the prefix cache are shared at two levels."""
    rng = random.Random(seed)
    words = [w for w in WORDS if w != "```"]
    preamble = " ".join(rng.choice(words) for _ in range(37))
    tables = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 45))) for _ in range(3)]
    return [Prompt(str(i), f"{preamble} {rng.choice(tables)} " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 12))))
            for i in range(n)]


@pytest.mark.parametrize("batch_size", [2, 5, 16])
def test_prefix_cache_equals_old_path_in_fp32_and_reuses_the_shared_blocks(random_fp32, batch_size):
    """The shared preamble and "table" blocks are computed once and copied (2 slots: reused by later
    refills; 16: all in the first refill, in rounds behind the prompts that compute them); every output
    equals plain generate's, item by item."""
    prompts = shared_prompts(16)
    config = GenerationConfig(max_new_tokens=10, batch_size=batch_size, stop_on_loop=False,
                              stop_at_statement_end=False)
    new = random_fp32.generate(prompts, config)
    reused = random_fp32.last_run["reused_tokens"]
    old = [old_path(random_fp32, p, config) for p in prompts]
    assert [(g.text, g.finish_reason, g.tokens_out) for g in new] == old
    total = sum(len(random_fp32.encode(p)) for p in prompts)
    assert reused >= 0.5 * total, (reused, total)  # the preamble alone is 37 of at most ~95 tokens
    assert random_fp32.last_run["prefill_tokens"] < total - reused // 2


def test_a_full_prefix_pool_keeps_no_more_blocks_and_changes_no_output(random_fp32, monkeypatch):
    """Many prompts sharing more than the pool holds (capped here at 3 blocks): the pool stays at its cap,
    the blocks that fit are reused, and every output is still the plain path's."""
    import harness.models.prefix as prefix

    monkeypatch.setattr(prefix, "MAX_POOL_TOKENS", 3 * prefix.BLOCK)
    prompts = shared_prompts(10, seed=6)
    encoded = [random_fp32.encode(p) for p in prompts]
    assert prefix.pool_tokens(encoded) == 3 * prefix.BLOCK
    config = GenerationConfig(max_new_tokens=6, batch_size=3, stop_on_loop=False, stop_at_statement_end=False)
    new = random_fp32.generate(prompts, config)
    assert [(g.text, g.finish_reason, g.tokens_out) for g in new] == [old_path(random_fp32, p, config) for p in prompts]
    assert 0 < random_fp32.last_run["reused_tokens"]
    engine = Engine(random_fp32.model, pad_id=random_fp32.tokenizer.pad_token_id, config=config,
                    make_stopper=lambda item: RowStopper(eos_ids=frozenset(random_fp32.eos_ids), max_new_tokens=6,
                                                         decode=str, sql=None, stop_loop=False))
    for _ in engine.run(encoded, 3):
        assert len(engine.prefix.slot_of) <= 3  # never more blocks than the pool holds
    assert [t.shape[1] for t in engine.prefix.k] == [4 * prefix.BLOCK] * len(engine.prefix.k)  # + a zero block


def test_a_full_prefix_pool_does_not_make_prompts_wait_for_blocks_it_cannot_keep(random_fp32, monkeypatch):
    """With room for one block, the prompts of a refill must not queue one per round behind leaders whose
    blocks the pool cannot keep: a handful of prefill forwards, not one per prompt."""
    import harness.models.prefix as prefix

    monkeypatch.setattr(prefix, "MAX_POOL_TOKENS", prefix.BLOCK)
    prompts = shared_prompts(16, seed=7)
    model = random_fp32.model
    real = type(model).forward
    prefills = []

    def counting(self, *args, **kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:
            prefills.append(ids.shape[0])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", counting)
    config = GenerationConfig(max_new_tokens=4, batch_size=16, stop_on_loop=False, stop_at_statement_end=False)
    random_fp32.generate(prompts, config)
    assert sum(prefills) == 16 and len(prefills) <= 4, prefills


def test_prefix_cache_off_gives_the_same_ids(random_fp32):
    prompts = shared_prompts(12, seed=4)
    config = GenerationConfig(max_new_tokens=8, batch_size=4, stop_on_loop=False, stop_at_statement_end=False)
    assert engine_ids(random_fp32, prompts, config) == engine_ids(random_fp32, prompts, config, prefix_cache=False)


def test_prefix_cache_bf16_wobble_is_bounded(random_dir):
    """bf16 with reused blocks: computed in another batch, a block's keys may round differently; each
    differing item must sit on a near tie of the old path's logits, and most items must be equal."""
    backend = load_hf_backend(str(random_dir), BackendOptions(dtype="bf16"))
    prompts = shared_prompts(16, seed=5)
    config = GenerationConfig(max_new_tokens=12, batch_size=5, stop_on_loop=False, stop_at_statement_end=False)
    assert_bf16_bounded(backend, prompts, config)


def test_scripted_model_batches_of_every_size_agree(tiny_backend):
    texts = ["go_eos", "hello world please answer go_sql", "go_loop", "hello go_long", "m0", "``` m0",
             "please go_sql", "q3"]
    prompts = [Prompt(str(i), t) for i, t in enumerate(texts)]
    runs = [[(g.text, g.finish_reason, g.tokens_out) for g in
             tiny_backend.generate(prompts, GenerationConfig(max_new_tokens=30, batch_size=b))] for b in (1, 3, 8)]
    assert runs[0] == runs[1] == runs[2]
    assert runs[0][0] == ("e1", "stop", 2) and runs[0][5] == ("m1 m2 ```", "stop", 3)


@pytest.mark.parametrize("where", ["decode", "prefill"])
def test_out_of_memory_halves_the_batch_without_losing_items(random_fp32, monkeypatch, caplog, where):
    """A forward (decoding step or prefill) over more than 2 rows raises torch.OutOfMemoryError: the engine
    backs off to 2 slots and restarts the unfinished rows; every item comes back, equal to an unconstrained
    run."""
    prompts = random_prompts(9, seed=3)
    config = GenerationConfig(max_new_tokens=12, batch_size=8)
    expected = [(g.text, g.finish_reason, g.tokens_out) for g in random_fp32.generate(prompts, config)]
    model = random_fp32.model
    real = type(model).forward

    def tight(self, *args, **kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[0] > 2 and (ids.shape[1] == 1) == (where == "decode"):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", tight)
    got = random_fp32.generate(prompts, config)
    assert [(g.text, g.finish_reason, g.tokens_out) for g in got] == expected
    assert random_fp32.last_run["slots"] == 2
    assert "out of GPU memory" in caplog.text


def test_auto_batch_size_on_cpu_is_the_measured_default(random_fp32):
    from harness.models.engine import CPU_BATCH

    assert random_fp32.auto_batch_size([[1, 2, 3]] * 50, 64) == CPU_BATCH == 32
    assert random_fp32.auto_batch_size([[1, 2, 3]] * 3, 64) == 3
    gens = random_fp32.generate(random_prompts(40), GenerationConfig(max_new_tokens=5, batch_size=0))
    assert len(gens) == 40 and random_fp32.last_run["slots"] == 32


def test_auto_batch_size_on_cpu_leaves_memory_for_the_rest(random_fp32, monkeypatch):
    """Rows whose KV buffers would take more than a quarter of the available memory are not started."""
    import harness.models.engine as engine
    from harness.models.engine import capacity_for, kv_bytes_per_token

    per_row = (kv_bytes_per_token(random_fp32.model.config, 4) * capacity_for(3, 64)
               + 3 * 4 * random_fp32.model.config.vocab_size)
    monkeypatch.setattr(engine, "available_memory", lambda: 4 * 5 * per_row)
    assert random_fp32.auto_batch_size([[1, 2, 3]] * 50, 64) == 5
    monkeypatch.setattr(engine, "available_memory", lambda: 1)
    assert random_fp32.auto_batch_size([[1, 2, 3]] * 50, 64) == 1



def test_compacting_the_cache_releases_each_layer_before_copying_the_next():
    """The peak while compacting is the cache plus one layer's copy, not two caches: the old buffers of a
    layer are unreachable before the next layer is copied."""
    import weakref

    import torch

    from harness.models.engine import SlotCache

    cache = SlotCache(4, [torch.zeros(1, 2, 3, 4) for _ in range(3)], capacity=8)
    cache.k[1][2] = 7.0
    old = [weakref.ref(b) for b in cache.k + cache.v]
    alive_at_each_copy = []

    def keep_slots_0_and_2(b):
        alive_at_each_copy.append(sum(r() is not None for r in old))
        return b[torch.tensor([0, 2])]

    cache.replace_each(keep_slots_0_and_2)
    assert alive_at_each_copy == [6, 5, 4, 3, 2, 1]  # all six at once would be [6, 6, 6, 6, 6, 6]
    assert [tuple(b.shape) for b in cache.k] == [(2, 2, 8, 4)] * 3
    assert float(cache.k[1][1].max()) == 7.0


def test_slot_cache_left_aligns_a_prefill_and_writes_each_row_at_its_own_column():
    """A prefill's rows end at its last column; in the slots they start at column 0. A decoding step writes
    row r's new keys at column pos[r] and the model sees the first `window` columns."""
    import torch

    from harness.models.engine import SlotCache

    width = 5
    keys = [torch.arange(2 * 1 * width * 1, dtype=torch.float32).reshape(2, 1, width, 1)]
    cache = SlotCache(3, keys, capacity=8)
    cache.write(torch.tensor([2, 0]), keys, [k + 100 for k in keys], lengths=[3, 5])
    assert cache.k[0][2, 0, :3, 0].tolist() == [2.0, 3.0, 4.0]  # item 0's last three columns
    assert cache.k[0][0, 0, :5, 0].tolist() == [5.0, 6.0, 7.0, 8.0, 9.0]
    assert cache.v[0][2, 0, :3, 0].tolist() == [102.0, 103.0, 104.0]
    assert cache.k[0][1].abs().sum() == 0  # an untouched slot
    pos = torch.tensor([5, 0, 3])
    cache.bind(pos, 6)
    got_k, got_v = cache.layers[0].update(torch.full((3, 1, 1, 1), -1.0), torch.full((3, 1, 1, 1), -2.0))
    assert got_k.shape == (3, 1, 6, 1)
    assert [cache.k[0][r, 0, int(p), 0].item() for r, p in enumerate(pos)] == [-1.0, -1.0, -1.0]
    assert cache.k[0][0, 0, :5, 0].tolist() == [5.0, 6.0, 7.0, 8.0, 9.0]  # nothing else moved


def test_a_step_that_cannot_be_recorded_falls_back_to_eager_once(random_fp32, monkeypatch, caplog):
    """On a GPU a step that CUDA graphs cannot record (bitsandbytes 8-bit synchronises inside its matmul)
    is decoded eagerly: the same outputs, one warning, and the backend does not try again."""
    from harness.models import engine as engine_module
    from harness.models.graphs import GraphCaptureFailed

    prompts = random_prompts(6, seed=5)
    config = GenerationConfig(max_new_tokens=10, batch_size=4)
    expected = [(g.text, g.finish_reason) for g in random_fp32.generate(prompts, config)]
    attempts = []

    class Unrecordable:
        def run(self, key, step):
            attempts.append(key)
            raise GraphCaptureFailed("RuntimeError: operation not permitted when stream is capturing")

    def new_graphs(self, device):
        return Unrecordable() if self.cuda_graphs else None

    monkeypatch.setattr(engine_module.Engine, "_new_graphs", new_graphs)
    try:
        assert [(g.text, g.finish_reason) for g in random_fp32.generate(prompts, config)] == expected
        assert len(attempts) == 1 and "decoding without CUDA graphs" in caplog.text
        assert random_fp32.cuda_graphs is False and random_fp32.last_run["graph_captures"] == 0
        random_fp32.generate(prompts, config)
        assert len(attempts) == 1  # remembered: not tried again
    finally:
        random_fp32.cuda_graphs = True


def test_eager_attention_gets_an_additive_mask_and_the_same_outputs(random_dir):
    """sdpa takes the decoding step's 4-D mask as booleans, eager attention adds it to the scores: the same
    greedy outputs either way (fp32). Other implementations are refused with the fix."""
    from harness.errors import ModelBackendError

    prompts, config = random_prompts(7, seed=11), GenerationConfig(max_new_tokens=16, batch_size=3)
    backend = load_hf_backend(str(random_dir), BackendOptions(dtype="fp32"))
    sdpa = [(g.text, g.finish_reason) for g in backend.generate(prompts, config)]
    backend.model.set_attn_implementation("eager")
    assert [(g.text, g.finish_reason) for g in backend.generate(prompts, config)] == sdpa
    backend.model.config._attn_implementation = "flex_attention"
    with pytest.raises(ModelBackendError, match="attn_implementation='sdpa'"):
        backend.generate(prompts, config)
