"""The release-level evaluation step the orchestration calls."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pads

from astroclip_core import fsio
from astroclip_core.evaluation.report import EvaluationReport, evaluate, write_report
from astroclip_core.search import read_embeddings
from astroclip_core.storage import StorageLayout


def read_truth(url: str | None) -> pa.Table | None:
    """The truth table (targetid + known properties) at ``url``, or None when absent."""
    if not url or not fsio.exists(url):
        return None
    fs, path = fsio.filesystem(url)
    return pads.dataset(path, filesystem=fs, format="parquet").to_table()


def evaluate_release(
    layout: StorageLayout, release: str, model: str, truth_url: str | None = None, k: int = 64
) -> tuple[EvaluationReport, dict[str, str]]:
    """Evaluate one model's embeddings of a release; write ``reports/<release>/<model>/``."""
    embeddings = read_embeddings(layout.embeddings_dir(release, model))
    fs, path = fsio.filesystem(layout.pairs_dir(release))
    photometry = pads.dataset(path, filesystem=fs, format="parquet", partitioning="hive").to_table(
        columns=["targetid", "flux_g", "flux_r", "flux_z"]
    )
    report = evaluate(embeddings, photometry, read_truth(truth_url), k=k)
    files = write_report(report, layout.report_dir(release, model), pairs=layout.pairs_dir(release))
    return report, files
