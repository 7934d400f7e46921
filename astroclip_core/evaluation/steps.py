"""The release-level evaluation step the orchestration calls."""

from __future__ import annotations

import pyarrow as pa

from astroclip_core import fsio
from astroclip_core.evaluation.baselines import BaselinesConfig
from astroclip_core.evaluation.comparison import comparison_markdown
from astroclip_core.evaluation.images import read_centre_crops
from astroclip_core.evaluation.report import evaluate, write_report
from astroclip_core.results import Figure, MetadataEntry, StepResult
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.embeddings import read_embeddings
from astroclip_core.tables.pairs import read_pairs_columns


def read_truth(url: str | None) -> pa.Table | None:
    """The truth table (targetid + known properties) at ``url``, or None when absent."""
    if not url or not fsio.exists(url):
        return None
    return fsio.read_dataset(fsio.parquet_dataset(url))


# The report's figures shown with the step's result (the full report is evaluation.json).
HEADLINE_KEYS = (
    "n_train", "n_test", "redshift.spectrum.r2", "redshift.image.r2",
    "redshift.image_to_spectrum.r2", "redshift.photometry.r2", "redshift.image.sigma_nmad",
    "retrieval.image_to_spectrum.recall_at_1", "retrieval.image_to_spectrum.median_rank",
    "retrieval.spectrum_to_image.median_rank", "redshift.image_mlp.r2",
    "redshift.spectrum_mlp.r2", "redshift.photometry_mlp.r2", "redshift.supervised_cnn.r2",
    "baselines.supervised_cnn.seconds", "bgs.redshift.spectrum.r2", "bgs.redshift.image.r2",
    "bgs.redshift.photometry_mlp.r2",
)  # fmt: skip
# The metadata entry holding the Markdown table of our R² beside the AstroCLIP paper's.
COMPARISON_KEY = "paper_comparison"


def evaluate_release(
    layout: StorageLayout,
    release: str,
    model: str,
    truth_url: str | None = None,
    k: int = 64,
    baselines: BaselinesConfig | None = None,
) -> StepResult:
    """Evaluate one model's embeddings of a release; write ``reports/<release>/<model>/``.

    The supervised CNN trains on the pair images' centre crops. The result's metadata holds
    the :data:`HEADLINE_KEYS` the report has, every figure, and under :data:`COMPARISON_KEY`
    the Markdown table of our R² beside the AstroCLIP paper's.
    """
    config = baselines or BaselinesConfig()
    embeddings = read_embeddings(layout.embeddings_dir(release, model))
    pairs_dir = layout.pairs_dir(release)
    # the pairs' DESI program gives the paper's footing, the bright program's (BGS) rows alone
    photometry = read_pairs_columns(
        pairs_dir, ["targetid", "flux_g", "flux_r", "flux_z", "program"]
    )
    images = read_centre_crops(pairs_dir, config.cnn.crop_pix)
    report = evaluate(
        embeddings,
        photometry,
        read_truth(truth_url),
        k=k,
        images=images,
        baselines=config,
        programs=photometry.select(["targetid", "program"]),
    )
    files = write_report(report, layout.report_dir(release, model), pairs=layout.pairs_dir(release))
    flat = report.to_flat_dict()
    card = _refresh_card(layout, release, model)
    metadata: dict[str, MetadataEntry] = {
        key: value for key in HEADLINE_KEYS if (value := flat.get(key)) is not None
    }
    metadata[COMPARISON_KEY] = comparison_markdown(flat)
    for name, url in files.items():
        if name.endswith(".png"):
            metadata[name.removesuffix(".png")] = Figure(fsio.read_bytes(url), name)
    outputs = {"report": files["evaluation.json"], **({"model_card": card} if card else {})}
    return StepResult(outputs=outputs, rows=None, size_bytes=None, metadata=metadata)


def _refresh_card(layout: StorageLayout, release: str, model: str) -> str | None:
    """Rewrite the model card with the report just written; None for a model folder in the old
    ``model.pt`` format (it has no model-folder config.json to make a card from)."""
    from astroclip_core.model.pretrained import WEIGHTS_NAME
    from astroclip_core.publish.model_card import refresh_model_card  # publish: a layer above

    if not fsio.exists(f"{layout.model_dir(release, model)}/{WEIGHTS_NAME}"):
        return None
    return refresh_model_card(layout, release, model)
