"""`python -m search.worker RUN_DIR --agent NAME --evals N --index K`: one extra worker process of a
search job (started by the runner for `--workers N`; not meant to be run by hand)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.worker")
    p.add_argument("run_dir")
    p.add_argument("--agent", required=True)
    p.add_argument("--evals", type=int, required=True)
    p.add_argument("--index", type=int, default=1)
    a = p.parse_args(argv)
    from hilprune.errors import HilpruneError

    from .runner import run_worker

    try:
        run_worker(a.run_dir, a.agent, a.evals, a.index)
    except HilpruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
