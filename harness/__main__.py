"""``python -m harness``: the ``txt2sql`` command, also under ``torchrun`` and ``accelerate launch``.

    torchrun --nproc-per-node 2 -m harness eval --model hf:/models/CodeLlama-13b-hf

With a launcher (``WORLD_SIZE`` > 1) every rank joins the process group; rank 0 runs ``txt2sql eval``
as usual (its generation step gathers every rank's shard, see ``harness.distributed``), the other ranks
only generate their shard. Only ``eval`` is sharded.
"""

from __future__ import annotations

import sys

from harness import distributed
from harness.cli import build_parser, eval_config_from_args, main


def worker(argv: list[str] | None) -> int:
    """A rank other than 0: generate this rank's shard of ``txt2sql eval``'s questions, send it to rank 0."""
    from harness.pipeline import build_backend, generate, select_questions

    args = build_parser().parse_args(argv)
    if getattr(args, "func", None) is None or args.func.__name__ != "cmd_eval":
        raise distributed.DistributedError("under torchrun/accelerate only `eval` runs sharded; "
                                           "run other commands as one process")
    config = eval_config_from_args(args)
    _benchmark, questions = select_questions(config)
    backend = build_backend(config)
    try:
        generate(backend, config, questions)
    finally:
        backend.close()
    return 0


def run(argv: list[str] | None = None) -> int:
    try:
        group = distributed.init()
        return main(argv) if group is None or group.leader else worker(argv)
    except distributed.DistributedError as exc:  # rank 0's own come back from main as exit status 2
        print(f"txt2sql: error: {exc}", file=sys.stderr)
        return 2
    finally:
        distributed.finish()


if __name__ == "__main__":
    sys.exit(run())
