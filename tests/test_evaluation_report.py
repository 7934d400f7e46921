"""The whole evaluation on synthetic embeddings whose right answers are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from astroclip_core.evaluation.report import (
    KNN_QUERY_TYPES,
    MLP_QUERY_TYPES,
    EvaluationReport,
    evaluate,
    write_report,
)
from astroclip_core.evaluation.synthetic import (
    synthetic_embeddings,
    synthetic_pairs_pixels,
    synthetic_photometry,
    synthetic_truth,
)
from astroclip_core.plots import rgb_image
from astroclip_core.storage import partition_file
from astroclip_core.tables.pairs import pairs_lookup

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REQUIRED_RETRIEVAL = ("recall_at_1", "recall_at_5", "recall_at_10", "median_rank", "n")
# Without images there is no supervised CNN; every other query type is always reported.
QUERY_TYPES = (*KNN_QUERY_TYPES, *MLP_QUERY_TYPES)


@pytest.fixture(scope="module")
def informative() -> pa.Table:
    return synthetic_embeddings(600, dim=16, informative=True, seed=0)


@pytest.fixture(scope="module")
def informative_report(informative: pa.Table) -> EvaluationReport:
    return evaluate(informative, synthetic_photometry(informative), synthetic_truth(informative))


def test_embeddings_that_encode_z_give_r2_near_one_and_perfect_retrieval(
    informative_report: EvaluationReport,
) -> None:
    flat = informative_report.to_flat_dict()
    for query in ("image", "spectrum", "image_to_spectrum"):
        assert flat[f"redshift.{query}.r2"] > 0.99
        assert flat[f"redshift.{query}.outlier_fraction"] == 0.0
        assert flat[f"redshift.{query}.sigma_nmad"] < 0.01
        assert flat[f"log_mstar.{query}.r2"] > 0.99
    assert flat["redshift.photometry.r2"] > 0.9
    for direction in ("image_to_spectrum", "spectrum_to_image"):
        assert flat[f"retrieval.{direction}.recall_at_1"] == 1.0
        assert flat[f"retrieval.{direction}.median_rank"] == 1.0
        assert flat[f"retrieval.{direction}.n"] == flat["n_test"]


def test_report_has_every_required_key_and_finite_values(
    informative_report: EvaluationReport, informative: pa.Table
) -> None:
    flat = informative_report.to_flat_dict()
    split = np.array(informative.column("split").to_pylist())
    assert flat["n_train"] == int((split == "train").sum())
    assert flat["n_test"] == int((split == "test").sum())
    assert flat["n_train"] + flat["n_test"] == 600
    required = [
        f"{t}.{q}.r2"
        for t in ("redshift", "log_mstar", "log_ssfr", "metallicity")
        for q in QUERY_TYPES
    ]
    required += [
        f"redshift.{q}.{m}" for q in QUERY_TYPES for m in ("sigma_nmad", "outlier_fraction", "bias")
    ]
    required += [
        f"retrieval.{d}.{m}"
        for d in ("image_to_spectrum", "spectrum_to_image")
        for m in REQUIRED_RETRIEVAL
    ]
    missing = [key for key in required if key not in flat]
    assert not missing
    assert all(np.isfinite(flat[key]) for key in required)


def test_random_embeddings_give_r2_near_zero_and_median_rank_near_half() -> None:
    emb = synthetic_embeddings(800, dim=16, informative=False, seed=1)
    report = evaluate(emb, synthetic_photometry(emb), None)
    flat = report.to_flat_dict()
    n = flat["retrieval.image_to_spectrum.n"]
    for query in ("image", "spectrum", "image_to_spectrum"):
        assert -0.15 < flat[f"redshift.{query}.r2"] < 0.1
    assert 0.35 * n < flat["retrieval.image_to_spectrum.median_rank"] < 0.65 * n
    assert 0.35 * n < flat["retrieval.spectrum_to_image.median_rank"] < 0.65 * n
    assert flat["redshift.photometry.r2"] > 0.9  # photometry still carries z
    assert not any(key.startswith("log_mstar") for key in flat)  # no truth, no property keys


def test_truth_for_part_of_the_galaxies_counts_only_those(informative: pa.Table) -> None:
    truth = synthetic_truth(informative).slice(0, 300)
    report = evaluate(informative, synthetic_photometry(informative), truth)
    test_ids = pc.filter(
        informative.column("targetid"), pc.equal(informative.column("split"), "test")
    )
    expected = int(pc.sum(pc.is_in(test_ids, truth.column("targetid"))).as_py())
    assert report.properties["log_mstar"]["image"].n == expected < report.n_test
    assert report.redshift["image"].n == report.n_test


def test_bad_inputs_raise_clear_errors(informative: pa.Table) -> None:
    phot = synthetic_photometry(informative)
    with pytest.raises(ValueError, match="photometry table lacks 10 of the 600 targetids"):
        evaluate(informative, phot.slice(10), None)
    mixed = informative.set_column(
        informative.schema.get_field_index("model"), "model", pa.array(["a", "b"] * 300)
    )
    with pytest.raises(ValueError, match="mixes models"):
        evaluate(mixed, phot, None)
    all_train = informative.set_column(
        informative.schema.get_field_index("split"), "split", pa.array(["train"] * 600)
    )
    with pytest.raises(ValueError, match="0 test"):
        evaluate(all_train, phot, None)


def test_write_report_json_and_figures(
    informative_report: EvaluationReport, informative: pa.Table, tmp_path: Path
) -> None:
    ids = {e.query_targetid for e in informative_report.examples}
    ids |= {t for e in informative_report.examples for t in e.neighbour_targetid}
    subset = informative.filter(pc.is_in(informative.column("targetid"), pa.array(sorted(ids))))
    pairs_file = Path(partition_file(str(tmp_path / "pairs"), 1234))
    pairs_file.parent.mkdir(parents=True)
    pq.write_table(synthetic_pairs_pixels(subset), pairs_file)

    written = write_report(
        informative_report, str(tmp_path / "report"), pairs=str(tmp_path / "pairs")
    )
    assert set(written) == {
        "evaluation.json",
        "pca.png",
        "redshift_knn.png",
        "retrieval_examples.png",
    }
    loaded = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    assert loaded["redshift.image.r2"] == pytest.approx(informative_report.redshift["image"].r2)
    for name in ("pca.png", "redshift_knn.png", "retrieval_examples.png"):
        data = (tmp_path / "report" / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    assert not [
        p for p in (tmp_path / "report").iterdir() if p.name.startswith(".")
    ]  # no temp files


def test_write_report_to_fsspec_url_without_pairs(informative_report: EvaluationReport) -> None:
    import fsspec

    written = write_report(informative_report, "memory://eval-test/reports/edr/m")
    assert set(written) == {"evaluation.json", "pca.png", "redshift_knn.png"}
    fs = fsspec.filesystem("memory")
    flat = json.loads(fs.cat_file("/eval-test/reports/edr/m/evaluation.json"))
    assert flat["n_test"] == informative_report.n_test


def test_pairs_lookup_raises_on_unknown_targetid(informative: pa.Table) -> None:
    lookup = pairs_lookup(synthetic_pairs_pixels(informative.slice(0, 2)))
    first = informative.column("targetid")[0].as_py()
    view = lookup([first])[first]
    assert view.image.shape == (3, 152, 152) and view.mask.dtype == bool
    rgb = rgb_image(view.image)
    assert rgb.shape == (152, 152, 3) and rgb.min() >= 0 and rgb.max() <= 1 and rgb.max() > 0.5
    with pytest.raises(KeyError, match="12345"):
        lookup([12345])
