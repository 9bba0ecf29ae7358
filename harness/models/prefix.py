"""Shared prompt prefixes computed once: the engine's prefix cache.

An evaluation's prompts repeat themselves: every one opens with the template's instructions, and every
question on a table repeats that table's DDL. In the bundled benchmark's 167 test prompts (70,853
tokens, SmolLM2 tokenizer) only 10,021 tokens are not a prefix of an earlier prompt. Prefill is most of
an evaluation's compute (docs/performance.md), so the keys and values of a shared prefix are kept and
copied instead of computed again.

How (the block scheme of vLLM's automatic prefix caching, reduced to one run's known prompts):

* A prompt is cut into blocks of ``BLOCK`` tokens; a block's key is a chain hash of every token up to
  its end, so equal keys mean equal prefixes; a key that two different prefixes reach (a hash
  collision) is checked for and never shared (``checked_keys``). The last token of a prompt is never in
  a block (it must be computed: its logits give the first new token).
* Before the run, ``PrefixStore`` counts for each key the prompts not yet admitted that contain it. After
  a prompt's prefill its blocks that some waiting prompt still contains are copied into one pool per
  layer; a block leaves the pool when no waiting prompt contains it any more. The pool is sized up front
  for every block two prompts share, at most ``MAX_POOL_TOKENS`` (``pool_tokens``), so ``--batch-size
  auto`` can reserve it; a full pool keeps no more blocks.
* Keys and values of a block do not depend on what follows it (causal attention) nor on where it sits
  in a batch (each row's positions count from its own first token), so reusing them changes nothing
  but rounding: equal in fp32, the usual bf16 batch-composition wobble otherwise
  (tests/models/test_engine.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from harness.models.transfer import device_tensor, to_device

if TYPE_CHECKING:
    import torch

BLOCK = 16
# The pool's size at most, in tokens (13B: 6.7 GB; SmolLM2-135M: 0.2 GB). A benchmark over many databases
# shares far more than fits; when the pool is full, blocks are simply not kept, and prompts compute them.
# The bundled benchmark's test split shares 3,344 tokens.
MAX_POOL_TOKENS = 8192


def flat_rows(rows: torch.Tensor, cols: torch.Tensor, heads: int, columns: int) -> torch.Tensor:
    """Where token ``t`` (at column ``cols[t]`` of row ``rows[t]``) sits, for each head, in a buffer
    ``[rows, heads, columns, head_dim]`` viewed as ``[rows * heads * columns, head_dim]``: ordered (token, head),
    as a layer's keys arrive. Copies between the slot cache and the pool are then one row copy each."""
    import torch

    head = torch.arange(heads, device=rows.device)[None, :]
    return ((rows[:, None] * heads + head) * columns + cols[:, None]).reshape(-1)


def copy_rows(dest: torch.Tensor, dest_index: torch.Tensor, source: torch.Tensor, source_index: torch.Tensor,
              run: int = 1) -> None:
    """``dest``'s rows ``dest_index`` = ``source``'s rows ``source_index``, both viewed as ``[-1, run * head_dim]``:
    a row is ``run`` consecutive columns of one head (``flat_rows`` over ``columns // run`` and ``cols // run``)."""
    width = source.shape[-1] * run
    dest.view(-1, width).index_copy_(0, dest_index, source.reshape(-1, width).index_select(0, source_index))


def block_rows(rows: torch.Tensor, blocks: torch.Tensor, heads: int, columns: int) -> torch.Tensor:
    """``flat_rows`` of whole blocks: block ``blocks[t]`` (columns ``BLOCK * blocks[t] ..``) of row ``rows[t]``, per
    head, in a buffer of ``columns`` columns (a multiple of ``BLOCK``), for ``copy_rows(..., run=BLOCK)``. One
    index entry moves a block's 16 keys of one head (4 KB for a 13B model): the prefix copies of a 13B pass
    (60k reused tokens, 40 heads, 40 layers) are 16 times fewer index entries than token by token."""
    return flat_rows(rows, blocks, heads, columns // BLOCK)


def block_keys(ids: Sequence[int]) -> list[int]:
    """Chain hashes of the prompt's full blocks, its last token excluded."""
    keys: list[int] = []
    h = 0
    usable = len(ids) - 1
    for j in range(usable // BLOCK):
        h = hash((h, tuple(ids[j * BLOCK:(j + 1) * BLOCK])))
        keys.append(h)
    return keys


def checked_keys(encoded: Sequence[Sequence[int]]) -> list[list[int]]:
    """Each prompt's block keys, cut at the first key that another prompt reached with other tokens: a
    hash collision must cost a recomputation, never another prompt's keys and values."""
    seen: dict[int, tuple[int, tuple[int, ...]]] = {}
    out = []
    for ids in encoded:
        keys = block_keys(ids)
        prev = 0
        for j, key in enumerate(keys):
            content = (prev, tuple(ids[j * BLOCK:(j + 1) * BLOCK]))
            if seen.setdefault(key, content) != content:
                keys = keys[:j]
                break
            prev = key
        out.append(keys)
    return out


def pool_tokens(encoded: Sequence[Sequence[int]]) -> int:
    """The pool's size in tokens: every distinct block that two or more prompts contain, at most
    ``MAX_POOL_TOKENS``."""
    return _pool_size(Counter(k for keys in checked_keys(encoded) for k in set(keys)))


def _pool_size(users: Counter[int]) -> int:
    """Tokens of every block that two or more prompts contain (``users``: prompts per key), capped."""
    return BLOCK * min(sum(1 for n in users.values() if n >= 2), MAX_POOL_TOKENS // BLOCK)


class PrefixStore:
    """The pool of shared blocks for one run of the engine (see the module doc)."""

    def __init__(self, encoded: Sequence[Sequence[int]], waiting: Sequence[int]) -> None:
        self.keys = checked_keys(encoded)
        self.users: Counter[int] = Counter(k for i in waiting for k in self.keys[i])
        self.capacity = _pool_size(self.users)
        self.slot_of: dict[int, int] = {}  # key -> block slot in the pool
        self.free: list[int] = list(range(self.capacity // BLOCK))[::-1]
        self.k: list[torch.Tensor] = []  # per layer [kv_heads, capacity + BLOCK, head_dim]; the last block is zeros
        self.v: list[torch.Tensor] = []
        self.reused_tokens = 0  # prompt tokens not computed thanks to the pool

    # ------------------------------------------------------------------ planning

    def stored(self, item: int) -> int:
        """Leading blocks of ``item`` in the pool now."""
        n = 0
        for key in self.keys[item]:
            if key not in self.slot_of:
                break
            n += 1
        return n

    def sharable(self, item: int) -> int:
        """Leading blocks of ``item`` that are in the pool, or that another waiting prompt contains while the
        pool has room for them: what it could reuse if it waited for them."""
        n = 0
        for key in self.keys[item]:
            if key not in self.slot_of and (self.users[key] < 2 or not self.free):
                break
            n += 1
        return n

    def order(self, pending: Sequence[int]) -> tuple[list[int], list[int]]:
        """(ready, later): a prompt is ready when waiting would not let it reuse more, or when it is the
        first of the pending prompts to need a missing block (it computes the block for the others)."""
        ready, later, leaders = [], [], set()
        for item in pending:
            have = self.stored(item)
            if have >= self.sharable(item):
                ready.append(item)
                continue
            missing = self.keys[item][have]  # sharable > have: there is a next block
            if missing in leaders:
                later.append(item)
            else:
                leaders.add(missing)
                ready.append(item)
        return ready, later

    # ------------------------------------------------------------------ tensors

    def _pool_columns(self, item: int, n: int) -> list[int]:
        """The pool columns holding the first ``n`` tokens of ``item``'s prompt (all in the pool)."""
        return [self.slot_of[self.keys[item][t // BLOCK]] * BLOCK + t % BLOCK for t in range(n)]

    def gather(self, items: Sequence[int], past: Sequence[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per layer keys and values ``[rows, kv_heads, width, head_dim]`` of the first ``past[r]`` tokens of
        each row's prompt, from the pool, right-aligned (zeros on the left), ``width = max(past)``."""
        import torch

        width = max(past)
        pad = self.capacity
        index = torch.full((len(items), width), pad, dtype=torch.long)
        for r, (item, n) in enumerate(zip(items, past, strict=True)):
            if n:
                index[r, width - n:] = torch.tensor(self._pool_columns(item, n), dtype=torch.long)
        index = to_device(index, self.k[0].device)
        self.reused_tokens += sum(past)
        keys = [pool[:, index].transpose(0, 1) for pool in self.k]
        values = [pool[:, index].transpose(0, 1) for pool in self.v]
        return keys, values

    def copy_into(self, items: Sequence[int], counts: Sequence[int], rows: Sequence[int],
                  keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
        """Copy the first ``counts[r]`` tokens (whole blocks) of each item's prompt from the pool into columns
        ``0 ..`` of row ``rows[r]`` of per-layer buffers ``[rows, kv_heads, columns, head_dim]`` (the slot cache;
        ``columns`` a multiple of ``BLOCK``), a block of a head per row copy."""
        import torch

        dest_rows: list[int] = []
        dest_blocks: list[int] = []
        source: list[int] = []
        for item, n, row in zip(items, counts, rows, strict=True):
            blocks = n // BLOCK
            if blocks * BLOCK != n:
                raise ValueError(f"prefix copy of {n} tokens: whole blocks only")  # the engine's contract
            dest_rows += [row] * blocks
            dest_blocks += range(blocks)
            source += [self.slot_of[key] for key in self.keys[item][:blocks]]
        if not source:
            return
        self.reused_tokens += len(source) * BLOCK
        device = keys[0].device
        r_t, b_t, s_t = (device_tensor(x, torch.long, device) for x in (dest_rows, dest_blocks, source))
        heads = keys[0].shape[1]
        dest = block_rows(r_t, b_t, heads, keys[0].shape[2])
        src = block_rows(torch.zeros_like(s_t), s_t, heads, self.k[0].shape[1])  # the pool: one row of blocks
        for kb, vb, pool_k, pool_v in zip(keys, values, self.k, self.v, strict=True):
            copy_rows(kb, dest, pool_k, src, BLOCK)
            copy_rows(vb, dest, pool_v, src, BLOCK)

    def admit(self, items: Sequence[int], keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor],
              lengths: Sequence[int], at: Sequence[tuple[int, int]] | None = None) -> None:
        """After the prefill of ``items`` (``keys``/``values``: per layer ``[rows, kv_heads, width, head_dim]``,
        item ``r``'s prompt in row ``at[r][0]`` from column ``at[r][1]`` on; by default row ``r``, its last
        ``lengths[r]`` columns): they no longer wait; their blocks that a waiting prompt contains join the
        pool; blocks no waiting prompt contains leave it."""
        import torch

        for item in items:
            self.users.subtract(self.keys[item])
        rows: list[int] = []
        firsts: list[int] = []  # each block's first column in the prefill's buffers
        slots: list[int] = []
        width = keys[0].shape[2]
        places = at if at is not None else [(r, width - n) for r, n in enumerate(lengths)]
        for item, (row, first) in zip(items, places, strict=True):
            for j, key in enumerate(self.keys[item]):
                if key in self.slot_of or self.users[key] <= 0 or not self.free:
                    continue
                slot = self.free.pop()
                self.slot_of[key] = slot
                rows.append(row)
                firsts.append(first + j * BLOCK)
                slots.append(slot)
        if rows:
            if not self.k:
                self._allocate(keys)
            device = keys[0].device
            heads = keys[0].shape[1]
            if width % BLOCK == 0 and all(f % BLOCK == 0 for f in firsts):  # the slot cache: a block per row copy
                r_t, c_t, s_t = (device_tensor(x, torch.long, device)
                                 for x in (rows, [f // BLOCK for f in firsts], slots))
                src = block_rows(r_t, c_t, heads, width)
                dest = block_rows(torch.zeros_like(s_t), s_t, heads, self.k[0].shape[1])
                run = BLOCK
            else:  # a right-aligned prefill's own cache: token by token
                r_t, c_t, s_t = (device_tensor(x, torch.long, device) for x in (
                    [r for r in rows for _ in range(BLOCK)], [f + t for f in firsts for t in range(BLOCK)],
                    [s * BLOCK + t for s in slots for t in range(BLOCK)]))
                src = flat_rows(r_t, c_t, heads, width)
                dest = flat_rows(torch.zeros_like(s_t), s_t, heads, self.k[0].shape[1])
                run = 1
            for pool_k, pool_v, k, v in zip(self.k, self.v, keys, values, strict=True):
                copy_rows(pool_k, dest, k, src, run)  # a prefill cache that is a view is copied by reshape
                copy_rows(pool_v, dest, v, src, run)
        for key in [k for k in self.slot_of if self.users[k] <= 0]:
            self.free.append(self.slot_of.pop(key))

    def _allocate(self, like: Sequence[torch.Tensor]) -> None:
        """One pool per layer, shaped like that layer's keys, plus a block of zeros: column ``capacity`` pads
        ``gather``, and whole blocks keep each head's columns a multiple of ``BLOCK`` (``block_rows``)."""
        import torch

        self.k = [torch.zeros((t.shape[1], self.capacity + BLOCK, t.shape[3]), dtype=t.dtype, device=t.device)
                  for t in like]
        self.v = [torch.zeros_like(t) for t in self.k]
