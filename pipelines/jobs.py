"""Jobs: one per stage, each over its own partitions."""

import dagster as dg

from pipelines.executors import selectable_executor

catalog_job = dg.define_asset_job(
    "catalog_job",
    selection=dg.AssetSelection.assets("release_catalog"),
    description="Select a release's galaxies and register its sky partitions.",
)
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("ingest"),
    description="Spectra, imaging sources, cross-match, cutouts and pairs of one partition. "
    "Runs in process, in subprocesses (the default) or on Dask, chosen by run config "
    "(execution: config: dask: cluster: existing: address: tcp://HOST:PORT).",
    executor_def=selectable_executor,
)
publish_job = dg.define_asset_job(
    "publish_job",
    selection=dg.AssetSelection.assets("hf_dataset"),
    description="Build (and optionally push) the Hugging Face dataset of a release.",
)
train_job = dg.define_asset_job(
    "train_job",
    selection=dg.AssetSelection.assets("contrastive_model"),
    description="Train the contrastive model of a release (only when asked, or on the schedule).",
    # Run monitoring (dagster_home/dagster.yaml) fails a run still STARTED after its
    # max_runtime_seconds; training at survey scale may take days, so its runs get a week.
    tags={"dagster/max_runtime_seconds": str(7 * 24 * 3600)},
)
embed_job = dg.define_asset_job(
    "embed_job",
    selection=dg.AssetSelection.assets("embeddings"),
    description="Embed every pair of a partition with the release's current model.",
)
evaluate_job = dg.define_asset_job(
    "evaluate_job",
    selection=dg.AssetSelection.assets("evaluation"),
    description="Zero-shot regression, retrieval and figures for the release's current model.",
)
ALL_JOBS = [catalog_job, ingest_job, publish_job, train_job, embed_job, evaluate_job]
