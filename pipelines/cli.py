"""``astroclip run``: registered into the ``astroclip`` command through an entry point.

astroclip_core's CLI never imports Dagster; it discovers this subcommand through the
``astroclip.commands`` entry-point group declared in pyproject.toml.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

from pipelines.defaults import DEFAULT_TRAIN_STEPS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` subcommand."""
    p = subparsers.add_parser(
        "run",
        help="materialize the whole graph (sample sky by default) through Dagster",
        description="Generate and serve the sample sky if needed, then materialize the catalogue, "
        "ingest, Hugging Face dataset, model, embeddings and evaluation of one release. Runs are "
        "recorded in $DAGSTER_HOME (default: the repository's dagster_home/).",
    )
    p.add_argument("--release", default="edr", help="release to process (default: edr)")
    p.add_argument("--storage", help="data root (local path or fsspec URL); sets ASTROCLIP_STORAGE")
    p.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_TRAIN_STEPS,
        help=f"training steps (default: {DEFAULT_TRAIN_STEPS})",
    )
    p.add_argument("--preset", default="tiny", help="model preset (default: tiny)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size (default: 64)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    p.add_argument("--skip-training", action="store_true", help="stop after the dataset")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.storage:
        os.environ["ASTROCLIP_STORAGE"] = args.storage
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    from pipelines.runner import RunOptions, run_all

    t0 = time.perf_counter()
    summary = run_all(
        RunOptions(
            release=args.release,
            train_steps=args.steps,
            preset=args.preset,
            batch_size=args.batch_size,
            device=args.device,
            skip_training=args.skip_training,
        )
    )
    total = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "partitions": summary.partitions,
                "seconds": summary.seconds,
                "total_seconds": round(total, 1),
            },
            indent=2,
        )
    )
    return 0
