"""Run acneops' Prefect flows: ``pipeline`` (dvc.yaml's stages, each in its own process through DVC), ``regenerate``
(a fresh versioned synthetic dataset from the registry's champion generators) and ``serve`` (regenerate on a cron
schedule; needs a Prefect server: ``prefect server start`` and ``PREFECT_API_URL``).

    python flows/pipeline.py pipeline [TARGET ...] [--dask local:2 | --dask tcp://scheduler:8786]
    python flows/pipeline.py regenerate [--seed N] [--count mild=200 ...] [--dvc-add]
    python flows/pipeline.py serve [--cron "0 3 * * 1"]

Without PREFECT_API_URL a flow starts Prefect's temporary local server for its run. The flows live in
``acneops.flows`` (importable by Dask workers); this script only parses arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _counts(items: list[str]) -> dict[str, int]:
    counts = {}
    for item in items:
        cls, sep, n = item.partition("=")
        if not sep or not n.isdigit():
            raise SystemExit(f"--count {item!r}: expected CLASS=N, e.g. --count mild=200")
        counts[cls] = int(n)
    return counts


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pipe = sub.add_parser("pipeline", help="dvc.yaml's stages as Prefect tasks, each `dvc repro --single-item`")
    pipe.add_argument("targets", nargs="*", help="stages to reproduce with their upstream (default: every stage)")
    pipe.add_argument("--dask", default=None, help="run the tasks on Dask: local:N (a local N-worker cluster) or "
                      "the address of a scheduler, tcp://host:8786 (needs the extra acneops[dask])")
    pipe.add_argument("--jobs", type=int, default=0, help="CPU cores the stages may use at once (default: all)")
    regen = sub.add_parser("regenerate", help="a new dataset in datasets/regenerated/ from the champions")
    regen.add_argument("--seed", type=int, default=None, help="base seed (default: fresh, recorded)")
    regen.add_argument("--count", action="append", default=[], metavar="CLASS=N", help="images of a class "
                       "(default: params regenerate.counts)")
    regen.add_argument("--dvc-add", action="store_true", help="`dvc add` the new dataset folder")
    serve = sub.add_parser("serve", help="serve the regenerate deployment on a cron schedule")
    serve.add_argument("--cron", default=None, help="cron schedule (default: params regenerate.cron)")
    for sp in (pipe, regen, serve):
        sp.add_argument("--params", default="params.yaml", type=Path)
    return p


def main(argv: list[str] | None = None) -> Any:
    args = parser().parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install -e .`
    from acneops.flows import prefect_defaults

    prefect_defaults()  # before Prefect is imported
    from acneops.core.errors import AcneopsError

    try:
        if args.command == "pipeline":
            from acneops.flows import pipeline

            return pipeline.run(args.params, targets=args.targets, dask=args.dask, jobs=args.jobs)
        from acneops.flows import regenerate

        if args.command == "serve":
            return regenerate.serve(args.params, cron=args.cron)
        return regenerate.run(args.params, seed=args.seed, counts=_counts(args.count), dvc_add=args.dvc_add)
    except AcneopsError as exc:  # bad input or a failed stage: its message, not a traceback
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
