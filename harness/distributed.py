"""One evaluation sharded across processes with torch.distributed (issue 14).

Launched by ``torchrun --nproc-per-node N -m harness eval …``, ``accelerate launch -m harness eval …``
or several hosts' ``torchrun`` with a rendezvous, the harness finds ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``
in its environment and then:

* every rank loads the model on its own device (``cuda:LOCAL_RANK``; gloo on a CPU) and generates its
  shard of the questions with the generation engine, through its own generation cache (a relaunch
  regenerates only what is missing);
* shards are balanced by prompt length (longest first, each to the rank with the fewest prompt tokens
  so far), not by position;
* the generations are gathered on rank 0 (``all_gather_object``), which alone provisions the database,
  executes, scores and writes the run directory;
* a rank that fails sends its error instead of generations, and every rank then stops with
  ``DistributedError`` naming it: the job exits non-zero, never with silently missing items. A rank
  that dies outright breaks the collective, which the others report the same way.

The pytest plugin does not run under these launchers (it says so and stops); use ``txt2sql eval``.
"""

from __future__ import annotations

import heapq
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from harness.errors import Txt2SqlError
from harness.models.base import Generation, GenerationConfig, ModelBackend, ProgressCallback, Prompt

log = logging.getLogger(__name__)
TIMEOUT_ENV = "TXT2SQL_DIST_TIMEOUT"  # seconds a collective waits for the other ranks (default 1800)


class DistributedError(Txt2SqlError):
    """A rank failed or vanished; the message names it and its error."""


@dataclass(frozen=True)
class Group:
    rank: int
    world: int
    local_rank: int

    @property
    def leader(self) -> bool:
        return self.rank == 0


_GROUP: Group | None = None


def from_env(environ: dict[str, str] | None = None) -> Group | None:
    """The launcher's group (``WORLD_SIZE`` > 1), or None for a plain single-process run."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank, local = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", env.get("RANK", "0")))
    except ValueError as exc:
        raise DistributedError(f"WORLD_SIZE/RANK/LOCAL_RANK must be whole numbers: {exc}") from exc
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise DistributedError(f"RANK={rank} is outside WORLD_SIZE={world}; check the launcher's arguments")
    return Group(rank, world, local)


def init(environ: dict[str, str] | None = None) -> Group | None:
    """Join the process group the launcher described (once per process); None when not launched so."""
    global _GROUP
    group = from_env(environ)
    if group is None or _GROUP is not None:
        return _GROUP or group
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(group.local_rank % torch.cuda.device_count())
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "1800")))
    try:
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timeout)
    except Exception as exc:
        raise DistributedError(f"rank {group.rank}: cannot join the process group ({exc}); check MASTER_ADDR, "
                               "MASTER_PORT and that every rank was started") from exc
    _GROUP = group
    print(f"txt2sql: rank {group.rank}/{group.world} joined ({'nccl' if cuda else 'gloo'})", file=sys.stderr,
          flush=True)
    return group


def current() -> Group | None:
    """The group this process joined with ``init``, or None."""
    return _GROUP


def shards(lengths: Sequence[int], world: int) -> list[list[int]]:
    """Indices per rank, balanced by length: longest first, each to the rank with the least so far.

    >>> shards([10, 1, 1, 1, 9, 2], 2)
    [[0, 1, 2], [4, 5, 3]]
    """
    heap = [(0, r) for r in range(world)]
    out: list[list[int]] = [[] for _ in range(world)]
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        load, r = heapq.heappop(heap)
        out[r].append(i)
        heapq.heappush(heap, (load + lengths[i], r))
    return out


def device_map_for(group: Group | None) -> str | None:
    """Where a rank loads its model: its own GPU."""
    import torch

    if group is None or not torch.cuda.is_available():
        return None
    return f"cuda:{group.local_rank % torch.cuda.device_count()}"


def generate_sharded(backend: ModelBackend, prompts: Sequence[Prompt], config: GenerationConfig,
                     progress: ProgressCallback | None, group: Group) -> list[Generation] | None:
    """This rank's shard through ``backend``; on rank 0 every generation in prompt order, elsewhere None.

    Raises ``DistributedError`` on every rank when any rank failed."""
    mine = shards([len(p.identity()) for p in prompts], group.world)[group.rank]
    payload: tuple[str, Any]
    try:
        gens = backend.generate([prompts[i] for i in mine], config, progress)
        payload = ("ok", [(i, asdict(g)) for i, g in zip(mine, gens, strict=True)])
    except Exception as exc:  # sent to the others, then raised everywhere
        payload = ("error", f"{type(exc).__name__}: {exc}")
    gathered = gather(payload, group)
    failed = [(r, msg) for r, (kind, msg) in enumerate(gathered) if kind == "error"]
    if failed:
        raise DistributedError("; ".join(f"rank {r} failed: {msg}" for r, msg in failed))
    if not group.leader:
        return None
    out: list[Generation | None] = [None] * len(prompts)
    for _kind, rows in gathered:
        for i, fields in rows:
            out[i] = Generation(**fields)
    missing = [prompts[i].id for i, g in enumerate(out) if g is None]
    if missing:
        raise DistributedError(f"no rank generated {len(missing)} prompts (first: {missing[0]})")
    return [g for g in out if g is not None]


def gather(payload: Any, group: Group) -> list[Any]:
    """Every rank's payload on every rank; a vanished rank becomes a ``DistributedError``."""
    import torch.distributed as dist

    gathered: list[Any] = [None] * group.world
    try:
        dist.all_gather_object(gathered, payload)
    except Exception as exc:
        raise DistributedError(f"rank {group.rank}: lost the other ranks while gathering generations ({exc}); "
                               "a rank died (killed, out of memory, lost GPU): see its log above") from exc
    return gathered


def finish() -> None:
    """Leave the process group (at exit)."""
    global _GROUP
    if _GROUP is None:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    _GROUP = None
