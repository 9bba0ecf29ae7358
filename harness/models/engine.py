"""The decoding loop behind the ``hf`` backend: a fixed number of batch *slots*; a row that stops leaves
its slot at once and a waiting prompt takes it, so no row waits for the longest one in its batch.

Why not ``model.generate``: it runs a batch until its longest row ends, and its cache
(``DynamicCache``) concatenates, copying the whole KV cache at every step. Why not transformers'
``generate_batch``: measured slower on an H200 (docs/performance.md).

How it works:

* The KV cache of every layer is one preallocated buffer ``[slots, kv_heads, capacity, head_dim]``
  (``SlotLayer``). Rows are left-aligned: a row's tokens fill columns ``0 .. pos - 1`` of its slot and a
  decoding step writes each row's new keys and values at its own column ``pos``, in place. The buffers
  hold the longest prompt of the pass plus every token it may generate, so nothing ever moves.
* A step attends over the first ``window`` columns (the longest live row, rounded up to ``WINDOW_BLOCK``),
  with a mask built on the device from the positions: column ``c`` of a row counts when ``c <= pos``.
  Columns past a row's end hold stale but finite values; the mask keeps them out.
* A new prompt is prefilled on its own (with the others of its refill), and its keys and values are
  copied into the first columns of a free slot.
* Prefixes shared by several prompts (the template's instructions, a table's DDL) are computed once:
  ``harness.models.prefix`` keeps their keys and values, and a prefill computes only the rest of each
  prompt. Within a refill, a prompt that can reuse a block another prompt of the refill is about to
  compute is prefilled in a later round.
* On a GPU the decoding step is recorded as a CUDA graph per (slots, window) and replayed
  (``harness.models.graphs``): an eager step of a 13B model is bound by its ~1,500 kernel launches.
* When no prompt waits and half the slots are free, the batch is compacted, so the last long rows do
  not drag dead slots along.
* Out of GPU memory: the slots are halved and the unfinished rows start again; finished rows are kept.

Per step the host sees one small tensor: the new token of every slot (``RowStopper`` and
``LoopWatch`` in ``harness.models.stopping`` decide, O(1) per token).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.errors import ModelBackendError
from harness.models.base import FinishReason
from harness.models.prefix import BLOCK, PrefixStore, flat_rows, pool_tokens
from harness.models.stopping import LoopWatch, RowStopper
from harness.models.transfer import device_tensor, to_device

if TYPE_CHECKING:
    import torch

    from harness.models.base import GenerationConfig

log = logging.getLogger(__name__)

# Refill when this share of the slots is free (or nothing is running): one prefill for several rows.
REFILL_SHARE = 8
# Prompt tokens per prefill forward: bounds prefill activations whatever the batch size.
PREFILL_TOKENS = 8192
# --batch-size auto on a CPU, at most. The bundled main job (167 questions, embedded SmolLM2, 2 cores, with
# the prefix cache; `benchmarks/perf/overhead.py --fresh --batch-size N`, 2026-12-01) took 134.1 s of wall
# time at 8 rows, 97.6 at 16, 78.2 at 32 and 74.7 at 64: more rows share each read of the weights.
CPU_BATCH = 32
# ... and the KV buffers of those rows take at most this share of the memory available.
CPU_MEMORY_SHARE = 0.25
MAX_AUTO_SLOTS = 512
# A decoding step attends over the longest live row rounded up to this many columns: on a GPU each window is
# one recorded CUDA graph per slot count, so a window lasts this many steps (the columns past a row are masked).
WINDOW_BLOCK = 64
LogitsHook = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]


@dataclass
class Finished:
    """One row's outcome: its item index, generated ids (EOS included) and why it stopped."""

    item: int
    ids: list[int]
    reason: FinishReason


@dataclass
class _Row:
    item: int
    stopper: RowStopper
    length: int  # tokens in its slot's cache (the host's copy of ``pos``)


def _dynamic_layer() -> type:
    from transformers.cache_utils import DynamicLayer

    return DynamicLayer


class SlotCache:
    """Per-layer KV buffers shared by every slot, exposed to the model as a ``DynamicCache`` whose layers write
    one column per row at the rows' positions and return the first ``window`` columns."""

    def __init__(self, slots: int, like: list[torch.Tensor], capacity: int, config: Any = None) -> None:
        """Buffers for ``slots`` rows shaped like a prefill's keys ``like`` (one tensor per layer).

        The ``DynamicCache`` is built from the model's ``config`` as transformers builds it, and its
        layers are then swapped for ``SlotLayer`` objects, so that whatever the cache derives from its
        layers stays consistent across transformers versions."""
        import torch
        from transformers import DynamicCache

        layer_cls = _slot_layer_class()
        self.k = [torch.zeros((slots, k.shape[1], capacity, k.shape[3]), dtype=k.dtype, device=k.device)
                  for k in like]
        self.v = [torch.zeros_like(b) for b in self.k]
        self.layers = [layer_cls(kb, vb) for kb, vb in zip(self.k, self.v, strict=True)]
        try:
            self.cache = DynamicCache(config=config) if config is not None else DynamicCache()
        except TypeError:  # pragma: no cover - a transformers without config=
            self.cache = DynamicCache()
        if len(self.cache.layers) == len(self.layers):
            self.cache.layers[:] = self.layers
        else:
            self.cache.layers = list(self.layers)
            self.cache.layer_class_to_replicate = None
        self.capacity = capacity
        self.rows = torch.arange(slots, device=self.k[0].device)

    def bind(self, pos: torch.Tensor, window: int) -> None:
        """The next forward writes row ``r``'s new column at ``pos[r]`` and attends over ``window`` columns."""
        index = self.flat_index(self.rows, pos)
        for layer in self.layers:
            layer.bind(index, window)

    def bind_tokens(self, rows: torch.Tensor, cols: torch.Tensor) -> None:
        """The next forward (a packed prefill) writes token ``t`` at column ``cols[t]`` of slot ``rows[t]``, and
        its attention gets the whole buffers (``harness.models.varlen`` says which columns each row reads)."""
        index = self.flat_index(rows, cols)
        for layer in self.layers:
            layer.bind(index, self.capacity)

    def flat_index(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """``prefix.flat_rows`` for these buffers: each new key is one row copy (an advanced-index write over
        the slot and column dimensions cost 20 us per layer and step on the H200)."""
        return flat_rows(rows, cols, self.kv_heads, self.capacity)

    @property
    def kv_heads(self) -> int:
        return int(self.k[0].shape[1])

    def write(self, slots: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor],
              lengths: list[int]) -> None:
        """Put a prefill's keys/values into the first columns of ``slots``. The prefill's rows are right-aligned
        (row ``r`` is its last ``lengths[r]`` columns); one gather per layer left-aligns them. Columns past a
        row's length get copies of its last one: masked, and overwritten as the row grows."""
        import torch

        width, longest, device = keys[0].shape[2], max(lengths), keys[0].device
        starts = width - device_tensor(lengths, torch.long, device)
        cols = (starts[:, None] + torch.arange(longest, device=device)).clamp(max=width - 1)
        for kb, vb, k, v in zip(self.k, self.v, keys, values, strict=True):
            index = cols[:, None, :, None].expand(k.shape[0], k.shape[1], longest, k.shape[3])
            kb[slots, :, :longest] = k.gather(2, index)
            vb[slots, :, :longest] = v.gather(2, index)

    def select(self, slots: torch.Tensor) -> None:
        """Keep only these slots (the batch is compacted)."""
        import torch

        self.replace_each(lambda b: b[slots])
        self.rows = torch.arange(len(slots), device=self.rows.device)

    def replace_each(self, new: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Each buffer replaced by ``new(buffer)``, one layer at a time, each old buffer released before the
        next new one is made: the peak is the cache plus one layer's copy. Building every layer's copy
        first held old and new caches at once (1.5x the cache when compacting), which ran a 13B model
        out of GPU memory on the H200 exactly when half the rows had finished."""
        for i, layer in enumerate(self.layers):
            self.k[i] = layer.kbuf = new(self.k[i])
            self.v[i] = layer.vbuf = new(self.v[i])
            layer.keys = layer.values = None  # its views of the old buffer go too


_SLOT_LAYER: type | None = None


def _slot_layer_class() -> type:
    """``SlotLayer``: a transformers ``DynamicLayer`` whose update writes in place (built lazily, so this
    module imports without transformers)."""
    global _SLOT_LAYER
    if _SLOT_LAYER is None:
        base = _dynamic_layer()

        class SlotLayer(base):  # type: ignore[misc, valid-type]
            def __init__(self, kbuf: torch.Tensor, vbuf: torch.Tensor) -> None:
                super().__init__()
                self.kbuf, self.vbuf = kbuf, vbuf
                self.device = kbuf.device
                self.is_initialized = True
                self.index: Any = None  # set by bind before each forward

            def bind(self, index: torch.Tensor, window: int) -> None:
                self.index = index  # SlotCache.flat_index
                self.keys = self.kbuf[:, :, :window]
                self.values = self.vbuf[:, :, :window]

            def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
                       **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
                # A decoding step brings [slots, kv_heads, 1, head_dim], a packed prefill [1, kv_heads, T, head_dim]:
                # as rows ordered (token, head), each copied to its place in the flattened buffer.
                dim = key_states.shape[3]
                self.kbuf.view(-1, dim).index_copy_(0, self.index, key_states.transpose(1, 2).reshape(-1, dim))
                self.vbuf.view(-1, dim).index_copy_(0, self.index, value_states.transpose(1, 2).reshape(-1, dim))
                return self.keys, self.values

        _SLOT_LAYER = SlotLayer
    return _SLOT_LAYER


# Attention implementations whose decoding step takes the engine's 4-D mask: sdpa as booleans, eager as
# additive floats. Others (flash attention, flex attention) build their masks from a 2-D one.
MASKED_ATTENTION = ("sdpa", "eager")


def attention_kind(model: Any) -> str:
    return str(getattr(text_config(model.config), "_attn_implementation", None) or "sdpa")


def check_supported(model: Any) -> None:
    """The slot cache replaces plain full-attention layers only (no sliding windows, no linear attention), and
    the decoding step passes a 4-D mask, which sdpa and eager attention take."""
    from transformers import DynamicCache

    kind = attention_kind(model)
    if kind not in MASKED_ATTENTION:
        raise ModelBackendError(f"the generation engine supports {' and '.join(MASKED_ATTENTION)} attention; this "
                                f"model uses {kind!r}. Load it with attn_implementation='sdpa'")

    try:
        probe = DynamicCache(config=model.config)
    except TypeError:  # pragma: no cover - older transformers without config=
        return
    odd = {type(layer).__name__ for layer in probe.layers if type(layer) is not _dynamic_layer()}
    if odd:
        raise ModelBackendError(f"the generation engine supports full-attention models only; this model's "
                                f"cache has {', '.join(sorted(odd))} layers")


def cache_keyword(model: Any) -> str:
    """``cache`` (transformers >= 5.24) or ``past_key_values`` (earlier, deprecated since)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def capacity_for(width: int, max_new_tokens: int) -> int:
    """Columns of the KV buffers: the widest prompt plus every token it may generate, rounded up to whole
    attention windows (``WINDOW_BLOCK``)."""
    return whole_windows(width + max_new_tokens)


def whole_windows(columns: int) -> int:
    """``columns`` rounded up to a multiple of ``WINDOW_BLOCK``."""
    return -(-columns // WINDOW_BLOCK) * WINDOW_BLOCK


def text_config(config: Any) -> Any:
    """The language model's part of a model's config (a multimodal config nests it)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


@dataclass(frozen=True)
class HeadShape:
    """What a model's attention keeps per token: layers, query heads, key/value heads, head size."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int


def head_shape(config: Any) -> HeadShape:
    cfg = text_config(config)
    heads = cfg.num_attention_heads
    return HeadShape(layers=cfg.num_hidden_layers, heads=heads,
                     kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
                     head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)


def kv_bytes_per_token(config: Any, dtype_bytes: int) -> int:
    """Bytes of keys and values one token occupies across all layers."""
    shape = head_shape(config)
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * dtype_bytes


def auto_batch_size(model: Any, encoded: Sequence[Sequence[int]], max_new_tokens: int,
                    packed_prefill: bool = False) -> int:
    """``--batch-size auto`` for these prompts. CPU: ``CPU_BATCH`` rows, fewer if their KV buffers would take
    more than ``CPU_MEMORY_SHARE`` of the memory available. GPU: the most slots whose KV buffers fit the free
    memory after a reserve for one prefill chunk (``PREFILL_TOKENS``) and its logits and for the prefix
    cache's pool (``pool_tokens``), capped at the item count and ``MAX_AUTO_SLOTS``. A padded prefill also
    holds the chunk's keys and values twice (its own cache, the past gathered from the pool); a packed one
    (``packed_prefill``: varlen attention) writes them straight into the slots, so it reserves neither. An
    estimate: the engine halves the slots on out-of-memory without losing items.
    """
    import torch

    longest_prompt, items = max(len(e) for e in encoded), len(encoded)

    dtype_bytes = torch.finfo(model.dtype).bits // 8 if model.dtype.is_floating_point else 2
    cfg = text_config(model.config)
    per_token = kv_bytes_per_token(cfg, dtype_bytes)
    per_row = per_token * capacity_for(longest_prompt, max_new_tokens) + 3 * 4 * cfg.vocab_size
    device = getattr(model, "device", None)
    if device is None or device.type != "cuda":
        fits = int(CPU_MEMORY_SHARE * available_memory() // per_row)
        return max(1, min(CPU_BATCH, items, fits))
    free, _total = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    inter = getattr(cfg, "intermediate_size", 4 * cfg.hidden_size)
    # a prefill chunk: its past gathered from the prefix pool, the cache that past is copied into, activations
    pool = pool_tokens(encoded)
    chunk_kv = 0 if packed_prefill else 2 * per_token
    reserve = (PREFILL_TOKENS * (chunk_kv + (6 * cfg.hidden_size + 3 * inter) * dtype_bytes) + (1 << 30)
               + (pool + BLOCK if pool else 0) * per_token)  # the pool ends with a block of zeros
    slots = int((0.92 * free - reserve) // per_row)
    log.info("batch size auto: %d (%.1f GiB free, %.1f MiB of KV cache per row)", slots, free / 2**30,
             per_row / 2**20)
    return max(1, min(slots, items, MAX_AUTO_SLOTS))


def available_memory() -> int:
    """Bytes of memory available to this process now (Linux: MemAvailable; elsewhere: free pages)."""
    import os

    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no way to know: assume room for the default
        return 1 << 40


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError)


@dataclass
class _State:
    """Everything one pass of the slot loop holds; device tensors are indexed by slot."""

    slots: int
    rows: list[_Row | None]
    loops: LoopWatch | None
    cache: Any = None  # SlotCache, from the first prefill on
    graphs: Any = None  # DecodeGraphs on a GPU (recorded for this pass's buffers), else None
    columns: Any = None  # [capacity] 0, 1, 2, ...: the mask of a step is columns <= pos
    pos: Any = None  # [slots] position id (and cache column) of the next input token
    last: Any = None  # [slots] the next input token (the newest generated one)
    count: Any = None  # [slots] tokens generated so far
    items: Any = None  # [slots] item index (for a logits hook)
    decode_batch: Any = None  # varlen.VarlenBatch of a decoding step (varlen attention only)
    pinned: Any = None  # two page-locked host buffers [slots] for a launched step's tokens (GPU)

    def live(self) -> list[int]:
        return [s for s, r in enumerate(self.rows) if r is not None]


@dataclass
class _Launched:
    """A decoding step queued on the device: the rows at its launch (by slot), its tokens (on the host once
    ``ready`` has fired; None: already there)."""

    rows: list[_Row | None]
    tokens: Any
    ready: Any


class Engine:
    """Greedy (or sampled) decoding of many prompts through a fixed number of slots; see the module doc.

    ``config`` gives the token budget, the temperature and whether to watch for loops (``stop_on_loop``);
    ``make_stopper(item)`` gives each row its ``RowStopper``; ``run`` yields the rows that end at each step.
    ``logits_hook(logits, items, counts)`` may rewrite a step's logits (the throughput benchmark forces
    EOS with it); ``counts`` is how many tokens each row has generated before this one.
    """

    def __init__(self, model: Any, *, pad_id: int, config: GenerationConfig,
                 make_stopper: Callable[[int], RowStopper], logits_hook: LogitsHook | None = None,
                 prefix_cache: bool = True, cuda_graphs: bool = True, varlen: bool | None = None,
                 compact: bool | None = None, pipeline: bool | None = None, fused: bool | None = None) -> None:
        """``varlen``: prefill and decode through variable-length attention (``harness.models.varlen``); None
        means where flash attention's kernel works (a GPU), False never, True always (tests, with the reference
        kernel on a CPU). ``compact``: drop dead slots when half are dead and nothing waits (None:
        unless the decoding step is the Triton kernel, for which a dead slot costs next to nothing). ``pipeline``: launch
        each decoding step before reading the previous one's tokens (None: on a GPU). ``fused``: the model's norms and
        rotary embeddings by ``harness.models.fused``'s kernels (None: with varlen attention where Triton is installed;
        True: always, which the CPU tests run in Triton's interpreter)."""
        self.model = model
        self.pad_id = pad_id
        self.config = config
        self.make_stopper = make_stopper
        self._done: list[Finished] = []  # rows that stopped during the current step
        self.slots = 0
        self.logits_hook = logits_hook
        self.encoded: list[list[int]] = []
        self.waiting: list[int] = []  # item indices, longest prompt last (popped first)
        self.steps = 0  # decoding steps run (for ms/step in the benchmark)
        # Prefill work, for the benchmark's split of the wall time: prompt tokens computed (left padding
        # included) and seconds spent. No extra synchronisation: each prefill ends by reading its first
        # tokens on the host, and the step before it did too, so the wall clock brackets the GPU work.
        self.prefill_tokens = 0
        self.prefill_forwards = 0
        self.prefill_computed = 0  # prompt tokens computed, padding excluded
        self.prefill_seconds = 0.0
        self.backoffs = 0  # out-of-memory restarts
        self.prefix_cache = prefix_cache
        self.prefix: PrefixStore | None = None
        self.cuda_graphs = cuda_graphs  # off after a step that cannot be recorded
        # Decoding steps recorded as CUDA graphs (each costs about two eager steps). A pass's graphs are dropped
        # with its buffers (compaction, out-of-memory restart), their memory pools with them; only this log stays.
        self.capture_log: list[tuple[int, int, float, float]] = []  # (slots, window, warm-up s, record s)
        self._cache_kw = cache_keyword(model)
        check_supported(model)
        self._additive_mask = attention_kind(model) == "eager"  # eager attention adds its mask to the scores
        if varlen is None:
            from harness.models.varlen import flash_usable

            varlen = flash_usable(model)
        self.varlen = varlen
        from harness.models.varlen import decodes_with_triton

        self.triton_decoding = bool(varlen) and decodes_with_triton(model)
        if compact is None:
            # Measured on the H200 (13B shape, 128 slots): with the Triton decoding kernel, no compaction took
            # 3.69 s against 3.94 (the recordings it saves outweigh the dead slots); with flash attention's
            # varlen kernel, 4.61 s against 4.42 (docs/performance.md).
            compact = not self.triton_decoding
        self.compact = compact
        device = getattr(model, "device", None)
        on_gpu = device is not None and device.type == "cuda"
        self.pipeline = pipeline if pipeline is not None else on_gpu
        from harness.models import fused as fused_kernels

        if fused is None:
            fused = bool(varlen) and on_gpu and fused_kernels.available()
        self.fused = fused_kernels.ops_for(model) if fused else fused_kernels.FusedOps()
        if varlen:
            from harness.models.varlen import register

            register()

    def run(self, encoded: Sequence[Sequence[int]], slots: int) -> Iterator[list[Finished]]:
        """Generate every item, yielding the rows that stopped at each step; on out-of-memory, halve the slots and
        start the unfinished rows again (the finished ones are kept)."""
        self.encoded = [list(e) for e in encoded]
        self.waiting = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), -i))
        self.slots = max(1, min(slots, len(encoded)))
        while self.waiting:
            self.prefix = PrefixStore(self.encoded, self.waiting) if self.prefix_cache else None
            state = _State(self.slots, [None] * self.slots, LoopWatch(self.slots) if self.config.stop_on_loop else None)
            try:
                yield from self._loop(state)
            except Exception as exc:
                if not is_oom(exc):
                    raise
                self._back_off(state, exc)
                self.slots = max(1, self.slots // 2)
                self.backoffs += 1

    def _back_off(self, state: _State, exc: BaseException) -> None:
        import torch

        if state.slots == 1:
            raise ModelBackendError(f"out of GPU memory with a batch of 1: {exc}. Use --quantize 8bit or "
                                    "4bit, a shorter --max-new-tokens, or a GPU with more memory") from exc
        unfinished = [r.item for r in state.rows if r is not None]
        self.waiting = sorted(self.waiting + unfinished, key=lambda i: (len(self.encoded[i]), -i))
        log.warning("out of GPU memory with %d rows in the batch; retrying %d unfinished rows with %d",
                    state.slots, len(unfinished), max(1, state.slots // 2))
        state.cache = state.graphs = state.columns = state.pos = state.last = state.count = state.items = None
        state.decode_batch = state.pinned = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _loop(self, state: _State) -> Iterator[list[Finished]]:
        """Refill, compact, step. Pipelined (on a GPU): each step is launched before the previous one's tokens
        are read, so the host's stop checks run while the device computes; a row that stopped is then found
        one step late (its slot computes one token more, discarded), and the batch changes shape (refill,
        compaction) only with no step in flight."""
        import torch

        pending: _Launched | None = None
        while True:
            with torch.inference_mode():
                if pending is not None and (self._refill_due(state) or self._compact_due(state)):
                    self._finish(state, pending)
                    pending = None
                self._refill(state)
                self._compact(state)
                launched = self._launch(state) if state.live() else None
                if pending is not None:
                    self._finish(state, pending)
                pending = launched
                if pending is not None and not self.pipeline:
                    self._finish(state, pending)
                    pending = None
            done, self._done = self._done, []
            if done:
                yield done
            if pending is None and not self.waiting and not state.live():
                return

    # ------------------------------------------------------------------ admission

    def _refill_due(self, state: _State) -> bool:
        """Prompts wait and enough slots are free (any, when none is live)."""
        free = sum(r is None for r in state.rows)
        live = state.slots - free
        return bool(self.waiting) and free > 0 and not (live and free < max(1, state.slots // REFILL_SHARE))

    def _refill(self, state: _State) -> None:
        if not self._refill_due(state):
            return
        free = [s for s, r in enumerate(state.rows) if r is None]
        pending = self.waiting[::-1][:len(free)]  # longest first
        while pending:
            # With the prefix cache, prompts that can reuse a block another pending prompt is about to
            # compute wait for the next round (one round per level of shared prefix).
            ready, pending = self.prefix.order(pending) if self.prefix is not None else (pending, [])
            for chunk in self._chunks(ready):
                t0 = time.perf_counter()
                self._prefill(state, chunk, free[:len(chunk)])
                self.prefill_seconds += time.perf_counter() - t0
                free = free[len(chunk):]
                admitted = set(chunk)  # only now: an out-of-memory prefill loses nothing
                self.waiting = [i for i in self.waiting if i not in admitted]

    def _reused(self, item: int) -> int:
        """Prompt tokens of ``item`` whose keys and values the prefix cache holds now."""
        return self.prefix.stored(item) * BLOCK if self.prefix is not None else 0

    def _chunks(self, items: list[int]) -> list[list[int]]:
        """Items in prefill chunks of at most ``PREFILL_TOKENS`` cache columns (the reused past included: its
        keys and values are copied into the chunk's cache), ordered by the tokens each computes, so that rows
        of a chunk compute similar widths (the narrowest pays the widest's padding). Packed (varlen): at most
        ``PREFILL_TOKENS`` computed tokens, no padding, the reused past read in place."""
        need = {i: len(self.encoded[i]) - self._reused(i) for i in items}
        if self.varlen:
            packed: list[list[int]] = [[]]
            tokens = 0
            for item in items:
                if packed[-1] and tokens + need[item] > PREFILL_TOKENS:
                    packed.append([])
                    tokens = 0
                packed[-1].append(item)
                tokens += need[item]
            return packed
        chunks: list[list[int]] = [[]]
        widest = 0
        for item in sorted(items, key=lambda i: -need[i]):
            wider = max(widest, len(self.encoded[item]))
            if chunks[-1] and (len(chunks[-1]) + 1) * wider > PREFILL_TOKENS:
                chunks.append([])
                wider = len(self.encoded[item])
            chunks[-1].append(item)
            widest = wider
        return chunks

    def _prefill(self, state: _State, items: list[int], slots: list[int]) -> None:
        if self.varlen:
            self._prefill_packed(state, items, slots)
        else:
            self._prefill_padded(state, items, slots)

    def _prefill_packed(self, state: _State, items: list[int], slots: list[int]) -> None:
        """The new tokens of every row in one sequence, their keys and values written straight into the slots
        (after the reused prefix, copied there from the pool), attention by ``harness.models.varlen``."""
        import torch

        from harness.models import varlen

        device = self.model.device
        lengths = [len(self.encoded[i]) for i in items]
        reused = [self._reused(i) for i in items]
        if state.cache is None:  # room for the longest prompt of the pass, whatever order they come in
            self._allocate(state, self._kv_like(), max(lengths + [len(self.encoded[i]) for i in self.waiting]))
        cache = state.cache
        if self.prefix is not None:
            self.prefix.copy_into(items, reused, slots, cache.k, cache.v)
        batch = varlen.prefill_batch(slots, reused, lengths, cache.kv_heads, cache.capacity, device)
        new = [n - r for n, r in zip(lengths, reused, strict=True)]
        ids = device_tensor([t for i, r in zip(items, reused, strict=True) for t in self.encoded[i][r:]], torch.long,
                            device)
        ends = to_device(torch.tensor(new, dtype=torch.long).cumsum(0).sub_(1), device)  # each row's last token
        assert batch.packed is not None
        cache.bind_tokens(batch.packed.token_rows, batch.packed.token_cols)
        with varlen.active(self.model, batch), self.fused.applied():
            out = self.model(input_ids=ids[None], position_ids=batch.packed.token_cols[None], use_cache=True,
                             logits_to_keep=ends, **{self._cache_kw: cache.cache})
        self.prefill_tokens += sum(new)
        self.prefill_forwards += 1
        self.prefill_computed += sum(new)
        if self.prefix is not None:
            self.prefix.admit(items, cache.k, cache.v, lengths, at=[(s, 0) for s in slots])
        self._start_rows(state, items, slots, lengths, out.logits[0])

    def _kv_like(self) -> list[Any]:
        """One empty tensor per layer shaped ``[1, kv_heads, 0, head_dim]`` in the dtype of the model's hidden
        states (a quantised model computes in its embeddings' dtype): what ``SlotCache`` sizes its buffers by."""
        import torch

        shape = head_shape(self.model.config)
        dtype = self.model.get_input_embeddings().weight.dtype
        return [torch.empty((1, shape.kv_heads, 0, shape.head_dim), dtype=dtype, device=self.model.device)
                for _ in range(shape.layers)]

    def _prefill_padded(self, state: _State, items: list[int], slots: list[int]) -> None:
        """Rows padded on the left to the widest computed width, masked attention (sdpa or eager), the reused
        past gathered from the pool; the keys and values are then copied into the slots."""
        import torch
        from transformers import DynamicCache

        device = self.model.device
        lengths = [len(self.encoded[i]) for i in items]
        reused = [self._reused(i) for i in items]
        width = max(n - r for n, r in zip(lengths, reused, strict=True))  # computed columns
        # A row that computes fewer than `width` tokens takes back that many of its reused ones, so that every
        # row is contiguous: [zeros | its cached past | the tokens computed now], ending at the last column.
        past = [max(0, r - (width - (n - r))) for n, r in zip(lengths, reused, strict=True)]
        depth = max(past)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(items), depth + width), dtype=torch.long)
        for r, item in enumerate(items):
            tail = self.encoded[item][past[r]:]
            ids[r, width - len(tail):] = torch.tensor(tail, dtype=torch.long)
            attention[r, depth + width - lengths[r]:] = 1
        ids, attention = to_device(ids, device), to_device(attention, device)
        positions = ((attention.cumsum(-1) - 1).clamp(min=0))[:, depth:]
        tmp: Any = DynamicCache()
        if depth and self.prefix is not None:
            for layer, (k, v) in enumerate(zip(*self.prefix.gather(items, past), strict=True)):
                tmp.update(k, v, layer)
        with self.fused.applied():
            out = self.model(input_ids=ids, attention_mask=attention, position_ids=positions,
                             use_cache=True, logits_to_keep=1, **{self._cache_kw: tmp})
        self.prefill_tokens += len(items) * width
        self.prefill_forwards += 1
        self.prefill_computed += sum(n - p for n, p in zip(lengths, past, strict=True))
        keys, values = [layer.keys for layer in tmp.layers], [layer.values for layer in tmp.layers]
        if self.prefix is not None:
            self.prefix.admit(items, keys, values, lengths)
        if state.cache is None:  # room for the longest prompt of the pass, whatever order they come in
            self._allocate(state, keys, max(lengths + [len(self.encoded[i]) for i in self.waiting]))
        slot_t = device_tensor(slots, torch.long, device)
        state.cache.write(slot_t, keys, values, lengths)
        del tmp, keys, values
        self._start_rows(state, items, slots, lengths, out.logits[:, -1, :])

    def _start_rows(self, state: _State, items: list[int], slots: list[int], lengths: list[int],
                    logits: torch.Tensor) -> None:
        """Prefilled rows take their slots: positions, first tokens (from each row's last prompt logits)."""
        import torch

        device = state.pos.device
        slot_t = device_tensor(slots, torch.long, device)
        item_t = device_tensor(items, torch.long, device)
        state.pos[slot_t] = device_tensor(lengths, torch.long, device)
        state.items[slot_t] = item_t
        state.count.index_fill_(0, slot_t, 0)  # `count[slot_t] = 0` would copy its scalar, and wait
        first = self._pick(logits, item_t, state.count[slot_t])
        state.last[slot_t] = first
        state.count.index_fill_(0, slot_t, 1)
        for slot, item, n in zip(slots, items, lengths, strict=True):
            state.rows[slot] = _Row(item, self.make_stopper(item), n)
            if state.loops is not None:
                state.loops.reset(slot)
        self._observe(state, slots, first.tolist())

    def _allocate(self, state: _State, like: list[Any], width: int) -> None:
        """Buffers for the longest prompt of the pass (``width`` columns) plus every token it may generate."""
        import torch

        capacity = capacity_for(width, self.config.max_new_tokens)
        device = like[0].device
        state.cache = SlotCache(state.slots, like, capacity, self.model.config)
        state.columns = torch.arange(capacity, device=device)
        state.pos = torch.zeros(state.slots, dtype=torch.long, device=device)
        state.last = torch.zeros(state.slots, dtype=torch.long, device=device)
        state.count = torch.zeros(state.slots, dtype=torch.long, device=device)
        state.items = torch.zeros(state.slots, dtype=torch.long, device=device)
        state.graphs = self._new_graphs(device)
        state.decode_batch = self._decode_batch(state)
        if device.type == "cuda":
            state.pinned = [torch.empty(state.slots, dtype=torch.long, pin_memory=True) for _ in range(2)]

    def _decode_batch(self, state: _State) -> Any:
        if not self.varlen:
            return None
        from harness.models.varlen import decode_batch

        return decode_batch(state.slots, state.cache.kv_heads, state.cache.capacity, state.pos.device,
                            triton=self.triton_decoding)

    def _new_graphs(self, device: Any) -> Any:
        if not self.cuda_graphs or device.type != "cuda":
            return None
        from harness.models.graphs import DecodeGraphs

        return DecodeGraphs(on_capture=self._count_capture)

    def _count_capture(self, key: tuple[int, int], warm_up: float, record: float) -> None:
        self.capture_log.append((*key, warm_up, record))

    @property
    def graph_captures(self) -> int:
        return len(self.capture_log)

    @property
    def capture_seconds(self) -> float:
        return sum(warm_up + record for _s, _w, warm_up, record in self.capture_log)

    # ------------------------------------------------------------------ decoding

    def _launch(self, state: _State) -> _Launched:
        """Queue one decoding step and the copy of its tokens to the host; ``_finish`` reads them."""
        import torch

        longest = max(r.length for r in state.rows if r is not None)
        # varlen attention reads each row's own columns whatever the window: one recorded step per pass
        window = state.cache.capacity if self.varlen else min(state.cache.capacity, whole_windows(longest + 1))
        logits = self._decode(state, window)
        nxt = self._pick(logits, state.items, state.count)
        state.last.copy_(nxt)
        # A dead slot's position stops at the last column (its writes land there, masked, until a prompt takes it).
        state.pos.add_(1).clamp_(max=state.cache.capacity - 1)
        state.count += 1
        self.steps += 1
        rows = list(state.rows)
        for row in rows:
            if row is not None:
                row.length += 1
        if nxt.device.type != "cuda":
            return _Launched(rows, nxt, None)
        host = state.pinned[self.steps % 2][:state.slots]  # two: one step in flight, one being read
        host.copy_(nxt, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        return _Launched(rows, host, ready)

    def _finish(self, state: _State, launched: _Launched) -> None:
        """Feed a launched step's tokens to the rows that were live at its launch and still are."""
        if launched.ready is not None:
            launched.ready.synchronize()
        tokens = launched.tokens.tolist()
        if all(r is not None and state.rows[s] is r for s, r in enumerate(launched.rows)):
            self._observe(state, range(state.slots), tokens)
            return
        slots = [s for s, r in enumerate(launched.rows) if r is not None and state.rows[s] is r]
        self._observe(state, slots, [tokens[s] for s in slots])

    def _decode(self, state: _State, window: int) -> torch.Tensor:
        """The logits of one decoding step over ``window`` columns: a replayed CUDA graph on a GPU, else eager."""
        if state.graphs is not None:
            from harness.models.graphs import GraphCaptureFailed

            try:
                return state.graphs.run((state.slots, window), lambda: self._forward_step(state, window))
            except GraphCaptureFailed as exc:
                log.warning("decoding without CUDA graphs (this model's step could not be recorded: %s)", exc)
                self.cuda_graphs = False
                state.graphs = None
        return self._forward_step(state, window)

    def _forward_step(self, state: _State, window: int) -> torch.Tensor:
        cache = state.cache
        cache.bind(state.pos, window)
        if state.decode_batch is not None:
            from harness.models import varlen

            batch = state.decode_batch
            batch.used_k = varlen.used_for_decoding(state.pos, cache.kv_heads)
            with varlen.active(self.model, batch), self.fused.applied():
                out = self.model(input_ids=state.last[:, None], position_ids=state.pos[:, None], use_cache=True,
                                 **{self._cache_kw: cache.cache})
            return out.logits[:, -1, :]
        # 4-D mask [slots, 1, 1, window]: transformers takes it as is (no mask building per step).
        mask = (state.columns[:window] <= state.pos[:, None])[:, None, None, :]
        if self._additive_mask:
            import torch

            dtype = self.model.dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)
        with self.fused.applied():
            out = self.model(input_ids=state.last[:, None], attention_mask=mask, position_ids=state.pos[:, None],
                             use_cache=True, **{self._cache_kw: cache.cache})
        return out.logits[:, -1, :]

    def _pick(self, logits: torch.Tensor, items: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        import torch

        if self.logits_hook is not None:
            logits = self.logits_hook(logits, items, counts)
        if self.config.temperature > 0:
            probs = torch.softmax(logits.float() / self.config.temperature, dim=-1)
            return torch.multinomial(probs, 1)[:, 0]
        return logits.argmax(dim=-1)

    def _observe(self, state: _State, slots: Sequence[int], tokens: list[int]) -> None:
        """Feed each live row its new token; free the slots of rows that stop."""
        hits = None
        if state.loops is not None:
            hits = state.loops.push(tokens, None if len(slots) == state.slots else list(slots))
        freed = []
        for k, slot in enumerate(slots):
            row = state.rows[slot]
            if row is None:
                continue
            reason = row.stopper.push(tokens[k], bool(hits[slot]) if hits is not None else False)
            if reason is not None:
                state.rows[slot] = None
                freed.append(slot)
                self._done.append(Finished(row.item, row.stopper.ids, reason))
        if freed and self.varlen:  # a free slot starts over at one column instead of reading its old row's
            import torch

            state.pos.index_fill_(0, device_tensor(freed, torch.long, state.pos.device), 0)  # no host wait

    # ------------------------------------------------------------------ housekeeping

    def _compact_due(self, state: _State) -> bool:
        live = sum(r is not None for r in state.rows)
        return (self.compact and not self.waiting and state.cache is not None and 0 < live <= state.slots // 2)

    def _compact(self, state: _State) -> None:
        """Nothing waits and half the slots are dead: drop them, so the last rows run in a small batch."""
        import torch

        if not self._compact_due(state):
            return
        live = state.live()
        keep = device_tensor(live, torch.long, state.pos.device)
        state.cache.select(keep)
        state.pos, state.last = state.pos[keep], state.last[keep]
        state.count, state.items = state.count[keep], state.items[keep]
        state.graphs = self._new_graphs(state.pos.device)  # recorded against the old buffers
        state.slots = len(live)
        state.decode_batch = self._decode_batch(state)
        if state.loops is not None:
            state.loops.select(live)
        state.rows = [state.rows[s] for s in live]
