"""``astroclip run`` and ``astroclip partitions``: registered into ``astroclip`` by an entry point.

astroclip_core's CLI never imports Dagster; it discovers these subcommands through the
``astroclip.commands`` entry-point group declared in pyproject.toml.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

from astroclip_core.cli import UsageError, int_in_range
from astroclip_core.releases import ReleaseNotFoundError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` and ``partitions`` subcommands (the commands that need Dagster)."""
    _register_run(subparsers)
    _register_partitions(subparsers)


def _register_run(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="materialize the whole graph (sample sky by default) through Dagster",
        description="Generate and serve the sample sky if needed, then materialize the catalogue, "
        "ingest, Hugging Face dataset, model, embeddings and evaluation of one release. Runs are "
        "recorded in $DAGSTER_HOME (default: the repository's dagster_home/).",
    )
    p.add_argument("--release", default="edr", help="release to process (default: edr)")
    p.add_argument("--storage", help="data root (local path or fsspec URL); sets ASTROCLIP_STORAGE")
    # Training flags default to None: an unset flag leaves the library's TrainConfig default
    # (read through the contrastive_model asset's config), so no default is restated here.
    # Values are checked by TrainConfig itself, before any work starts (see _run).
    p.add_argument("--steps", type=int, help="training steps (default: TrainConfig's)")
    p.add_argument("--preset", help="model preset (default: TrainConfig's)")
    p.add_argument("--batch-size", type=int, help="training batch size (default: TrainConfig's)")
    p.add_argument(
        "--device",
        choices=["cpu", "cuda", "auto"],
        help="cpu, cuda or auto (default: TrainConfig's)",
    )
    p.add_argument("--seed", type=int, help="training seed (default: TrainConfig's)")
    p.add_argument(
        "--checkpoint-every", type=int, help="steps between checkpoints (default: TrainConfig's)"
    )
    p.add_argument(
        "--sky-size",
        choices=["tiny", "small", "default"],
        help="sample-sky size preset when the sample sky is the source (default: default); "
        "tiny gives a run of a few minutes to try things",
    )
    p.add_argument(
        "--sky-scale",
        type=int_in_range(1, 1024),
        help="sample sky covering N times the preset's nside-16 pixels per release (default: 1)",
    )
    p.add_argument(
        "--nproc",
        type=int,
        help="training processes (one per GPU; above 1 they train together under torchrun)",
    )
    p.add_argument(
        "--train-source",
        choices=["pairs", "hf"],
        help="train from the pairs table (default) or the published Hugging Face shards",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="restart training from step 0 (by default an interrupted training of the same "
        "config resumes from its last checkpoint)",
    )
    p.add_argument("--skip-training", action="store_true", help="stop after the dataset")
    p.add_argument(
        "--raw-cache",
        metavar="keep|evict|<N>gb",
        help="raw download cache once a partition's pairs are written: keep, evict (delete the "
        "partition's own coadds and cutouts; the default) or a size cap such as 2gb, least "
        "recently used files out",
    )
    p.add_argument(
        "--imaging",
        choices=["auto", "service", "bricks"],
        help="where stamps come from: auto (default: per partition, the cheaper by the cost rule "
        "in astroclip_core.ingest.bricks), service (one cutout request per object) or bricks "
        "(cut from DR9 coadd bricks)",
    )
    p.add_argument(
        "--brick-root",
        metavar="URL|PATH",
        help="DR9 root to read coadd bricks from, e.g. an on-disk mirror (read in place); "
        "default: the sweep root",
    )
    p.add_argument(
        "--executor",
        choices=["in_process", "multiprocess", "dask"],
        default="in_process",
        help="where the ingest steps run: in this process (default), a subprocess per step, or "
        "on Dask (every worker must see the same data root and $DAGSTER_HOME)",
    )
    p.add_argument(
        "--dask-address",
        metavar="tcp://HOST:PORT",
        help="with --executor dask: a running Dask scheduler (default: start a LocalCluster, "
        "one worker per core)",
    )
    p.set_defaults(func=_run)


def _check_executor(args: argparse.Namespace) -> None:
    """Refuse --dask-address without --executor dask, or one where no scheduler answers."""
    if not args.dask_address:
        return
    if args.executor != "dask":
        raise UsageError(f"--dask-address {args.dask_address} needs --executor dask")
    from pipelines.executors import SchedulerUnreachableError, check_scheduler

    try:
        check_scheduler(args.dask_address)
    except SchedulerUnreachableError as err:
        raise UsageError(f"--dask-address {args.dask_address}: {err}") from None


def _run(args: argparse.Namespace) -> int:
    _check_executor(args)
    if args.raw_cache is not None:
        from astroclip_core.ingest.rawcache import RawCachePolicy

        try:
            RawCachePolicy.parse(args.raw_cache)
        except ValueError as err:
            raise UsageError(f"--raw-cache: {err}") from None
    if args.storage:
        os.environ["ASTROCLIP_STORAGE"] = args.storage
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    # A new DAGSTER_HOME's schema set-up logs dozens of alembic lines at INFO: not news to a user.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from astroclip_core.storage import StorageLayout, default_root
    from pipelines.executors import SchedulerUnreachableError
    from pipelines.runner import RunOptions, run_all
    from pipelines.training import TrainingConfig

    flags = {
        "steps": args.steps,
        "preset": args.preset,
        "batch_size": args.batch_size,
        "device": args.device,
        "seed": args.seed,
        "checkpoint_every": args.checkpoint_every,
        "nproc": args.nproc,
        "source": args.train_source,
    }
    training = TrainingConfig(**{k: v for k, v in flags.items() if v is not None}, fresh=args.fresh)
    if not args.skip_training:
        # Build the library config now, so a bad preset or value stops the command before the
        # ingest instead of after it.
        try:
            training.train_config(StorageLayout(default_root()), args.release)
            training.command()  # checks nproc
        except ValueError as err:
            raise UsageError(str(err)) from None
    from pipelines.definitions import defs
    from pipelines.resources import SampleSkyResource

    resources = dict(defs.resources)
    if args.raw_cache is not None:
        from pipelines.resources import StorageResource

        resources["storage"] = StorageResource(raw_cache=args.raw_cache)
    if args.sky_size or args.sky_scale:
        resources["sample_sky"] = SampleSkyResource(
            size=args.sky_size or "default", scale=args.sky_scale or 1
        )
    if args.imaging or args.brick_root:
        from pipelines.resources import LegacySurveySourceResource

        settings = resources["legacysurvey"].model_dump()
        settings["imaging"] = args.imaging or settings["imaging"]
        settings["brick_root_url"] = args.brick_root or settings["brick_root_url"]
        resources["legacysurvey"] = LegacySurveySourceResource(**settings)
    t0 = time.perf_counter()
    try:
        summary = run_all(
            RunOptions(
                release=args.release,
                training=training,
                skip_training=args.skip_training,
                executor=args.executor,
                dask_address=args.dask_address,
            ),
            resources=resources,
        )
    except ReleaseNotFoundError as err:
        raise UsageError(f"--release {args.release!r}: {err}") from err
    except SchedulerUnreachableError as err:
        raise UsageError(f"--dask-address {args.dask_address}: {err}") from err
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


def _register_partitions(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "partitions",
        help="register the Dagster partitions of the releases the DESI source publishes",
        description="Partitions live in $DAGSTER_HOME (default: the repository's dagster_home/). "
        "A fresh one has none, so `dagster asset materialize --partition edr` has nothing to "
        "select until they are registered.",
    )
    sub = p.add_subparsers(dest="action", required=True)
    sync = sub.add_parser(
        "sync",
        help="add a release partition for every release the DESI source lists",
        description="List the releases the configured DESI source publishes and add each as a "
        "partition of `releases`. For the sample sky (no root URL set) these are the releases in "
        "its folder and its configured ones, which a step generates on first use. The pixel "
        "partitions follow when release_catalog runs.",
    )
    sync.add_argument(
        "--storage", help="data root (local path or fsspec URL); sets ASTROCLIP_STORAGE"
    )
    sync.set_defaults(func=_partitions_sync)


def _partitions_sync(args: argparse.Namespace) -> int:
    if args.storage:
        os.environ["ASTROCLIP_STORAGE"] = args.storage
    from pipelines.definitions import defs
    from pipelines.partitions import sync_releases
    from pipelines.runner import dagster_instance

    resources = defs.resources
    released, added = sync_releases(dagster_instance(), resources["desi"], resources["sample_sky"])
    for release in released:
        state = "added" if release.name in added else "already registered"
        print(f"{release.name} (production {release.specprod}): {state}")
    if not released:
        print("the DESI source lists no releases; nothing registered")
    return 0
