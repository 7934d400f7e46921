"""Stage 5: the evaluation report of a release's current model."""

import dagster as dg

from astroclip_core import fsio
from astroclip_core.evaluation.steps import evaluate_release
from astroclip_core.training.steps import current_model
from pipelines.metadata import png_md
from pipelines.partitions import releases_partitions
from pipelines.resources import DesiSourceResource, SampleSkyResource, StorageResource

HEADLINE_KEYS = (
    "n_train", "n_test", "redshift.spectrum.r2", "redshift.image.r2",
    "redshift.image_to_spectrum.r2", "redshift.photometry.r2", "redshift.image.sigma_nmad",
    "retrieval.image_to_spectrum.recall_at_1", "retrieval.image_to_spectrum.median_rank",
    "retrieval.spectrum_to_image.median_rank",
)  # fmt: skip


@dg.asset(
    partitions_def=releases_partitions,
    deps=[dg.AssetDep("embeddings", partition_mapping=dg.AllPartitionMapping())],
    group_name="evaluation",
    kinds={"json", "png"},
    description="Zero-shot k-NN regression (redshift and, on the sample sky, true properties), "
    "cross-modal retrieval and figures; writes reports/<release>/<model>/evaluation.json.",
)
def evaluation(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    desi: DesiSourceResource,
    sample_sky: SampleSkyResource,
) -> dg.MaterializeResult:
    release = context.partition_key
    layout = storage.layout()
    ref = current_model(layout, release)
    # Truth (true stellar mass, metallicity, sSFR) exists only for the sample sky.
    truth = None if desi.root_url else sample_sky.truth_path(release)
    report, files = evaluate_release(layout, release, ref.name, truth_url=truth)
    flat = report.to_flat_dict()
    md: dict[str, object] = {k: flat[k] for k in HEADLINE_KEYS if flat.get(k) is not None}
    md["report"] = dg.MetadataValue.path(files["evaluation.json"])
    for name, url in files.items():
        if name.endswith(".png"):
            md[name.removesuffix(".png")] = png_md(fsio.read_bytes(url), name)
    return dg.MaterializeResult(metadata=md)
