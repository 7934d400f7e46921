"""Trained baselines (MLP probes, photometry MLP, supervised CNN) and the paper comparison.

Small synthetic inputs and CPU-sized budgets: each test trains a few seconds at most.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from astroclip_core.evaluation.baselines import (
    BaselinesConfig,
    CnnConfig,
    MlpConfig,
    fit_predict_cnn,
    fit_predict_mlp,
    masked_mse,
)
from astroclip_core.evaluation.comparison import (
    BGS_SOURCE,
    MISSING,
    OUR_PROPERTIES,
    OUR_ROWS,
    PAPER_ROWS,
    comparison_markdown,
    comparison_rows,
)
from astroclip_core.evaluation.images import GalaxyImages, read_centre_crops
from astroclip_core.evaluation.metrics import r2_score
from astroclip_core.evaluation.report import (
    BGS_MIN_TEST,
    MLP_QUERY_TYPES,
    TRAINED_QUERY_TYPES,
    EvaluationReport,
    evaluate,
)
from astroclip_core.evaluation.synthetic import (
    synthetic_embeddings,
    synthetic_galaxy_images,
    synthetic_pairs_pixels,
    synthetic_photometry,
    synthetic_truth,
)
from astroclip_core.storage import partition_file

FAST_MLP = MlpConfig(hidden=(64, 64), epochs=60, batch_size=64)
FAST_CNN = CnnConfig(crop_pix=16, bin_factor=1, widths=(4, 8, 16, 32), epochs=8, batch_size=32)
FAST = BaselinesConfig(mlp=FAST_MLP, cnn=FAST_CNN)
TARGETS = ("redshift", "log_mstar", "log_ssfr", "metallicity")


def _split(n: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(n)
    return rows < int(0.75 * n), rows >= int(0.75 * n)


def _blobs(amplitude: np.ndarray, size_pix: int, seed: int) -> np.ndarray:
    """(N, 3, S, S) Gaussian blobs in nanomaggies, brightness ``amplitude``, plus sky noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size_pix, :size_pix] - (size_pix - 1) / 2.0
    blob = np.exp(-(xx**2 + yy**2) / (2 * 3.0**2))  # (S, S)
    colour = np.array([0.5, 0.8, 1.0])[None, :, None, None]
    images = amplitude[:, None, None, None] * colour * blob
    return (images + rng.normal(0, 0.002, images.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def tables() -> dict[str, pa.Table]:
    emb = synthetic_embeddings(320, dim=16, informative=True, seed=4)
    return {
        "embeddings": emb,
        "photometry": synthetic_photometry(emb),
        "truth": synthetic_truth(emb),
    }


@pytest.fixture(scope="module")
def report(tables: dict[str, pa.Table]) -> EvaluationReport:
    emb = tables["embeddings"]
    images = synthetic_galaxy_images(emb, size_pix=20)
    return evaluate(emb, tables["photometry"], tables["truth"], k=16, images=images, baselines=FAST)


def test_mlp_learns_a_clear_function_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6))
    signal = np.sin(x[:, 0]) + 0.5 * x[:, 1] ** 2 + x[:, 2] * x[:, 3]  # (N,) learnable
    noise = rng.normal(size=500)  # independent of x
    train, test = _split(500)
    fit = fit_predict_mlp(x[train], np.stack([signal, noise], 1)[train], x[test], FAST_MLP)
    assert fit.prediction.shape == (int(test.sum()), 2)
    assert r2_score(signal[test], fit.prediction[:, 0]) > 0.8
    assert -0.3 < r2_score(noise[test], fit.prediction[:, 1]) < 0.1


def test_cnn_learns_brightness_and_not_noise() -> None:
    rng = np.random.default_rng(1)
    target = rng.uniform(0.0, 1.0, 400)
    images = _blobs(0.02 * 10 ** (1.5 * target), size_pix=16, seed=2)  # brightness <- target
    noise = rng.normal(size=400)
    train, test = _split(400)
    y = np.stack([target, noise], 1)
    fit = fit_predict_cnn(images[train], y[train], images[test], FAST_CNN)
    assert r2_score(target[test], fit.prediction[:, 0]) > 0.7
    assert r2_score(noise[test], fit.prediction[:, 1]) < 0.15
    n_fit = int(train.sum()) - round(FAST_CNN.val_fraction * int(train.sum()))  # 270 rows
    assert fit.steps == FAST_CNN.epochs * math.ceil(n_fit / FAST_CNN.batch_size)
    assert 1 <= fit.best_epoch <= FAST_CNN.epochs and fit.n_params > 0


def test_same_seed_same_predictions_other_seed_differs() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(200, 4)), rng.normal(size=(200, 1))
    images = _blobs(rng.uniform(0.01, 0.1, 120), size_pix=16, seed=3)
    cnn_y = rng.normal(size=(120, 1))
    threads = torch.get_num_threads()
    mlp = [fit_predict_mlp(x[:150], y[:150], x[150:], FAST_MLP) for _ in range(2)]
    other = fit_predict_mlp(x[:150], y[:150], x[150:], MlpConfig(hidden=(64, 64), seed=1))
    cnn = [fit_predict_cnn(images[:90], cnn_y[:90], images[90:], FAST_CNN) for _ in range(2)]
    np.testing.assert_array_equal(mlp[0].prediction, mlp[1].prediction)
    np.testing.assert_array_equal(cnn[0].prediction, cnn[1].prediction)
    assert not np.allclose(mlp[0].prediction, other.prediction)
    assert torch.get_num_threads() == threads  # the thread count is restored


def test_nan_targets_are_masked_not_learnt() -> None:
    pred = torch.tensor([[1.0, 5.0], [2.0, 0.0]])
    target = torch.tensor([[0.0, float("nan")], [0.0, 1.0]])
    assert float(masked_mse(pred, target)) == pytest.approx((1 + 4 + 1) / 3)

    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 3))
    y = np.stack([x[:, 0], 2 * x[:, 1] - x[:, 2]], 1)
    partial = y.copy()
    partial[::2, 1] = np.nan  # half the rows lack the second target
    train, test = _split(400)
    fit = fit_predict_mlp(x[train], partial[train], x[test], FAST_MLP)
    assert np.isfinite(fit.prediction).all()
    assert r2_score(y[test, 1], fit.prediction[:, 1]) > 0.9  # learnt from the known half
    with pytest.raises(ValueError, match="no finite train row"):
        fit_predict_mlp(x[train], np.full((int(train.sum()), 1), np.nan), x[test], FAST_MLP)


def test_report_has_every_new_key_with_sane_values(report: EvaluationReport) -> None:
    flat = report.to_flat_dict()
    for query in TRAINED_QUERY_TYPES:
        for target in TARGETS:
            assert flat[f"{target}.{query}.n"] == report.n_test
            assert flat[f"{target}.{query}.r2"] <= 1.0
        for metric in ("sigma_nmad", "outlier_fraction", "bias", "mean_bias"):
            assert np.isfinite(flat[f"redshift.{query}.{metric}"])
        assert flat[f"baselines.{query}.seconds"] > 0
        assert flat[f"baselines.{query}.steps"] > 0
    # The embeddings and photometry encode z smoothly; so do the synthetic images.
    for query in ("image_mlp", "spectrum_mlp", "photometry_mlp"):
        assert flat[f"redshift.{query}.r2"] > 0.9
        assert flat[f"log_mstar.{query}.r2"] > 0.9
    assert flat["redshift.supervised_cnn.r2"] > 0.5
    assert f"{FAST_CNN.epochs} epochs" in flat["definitions.supervised_cnn"]
    assert f"{FAST_CNN.crop_pix}-px centre crop" in flat["definitions.supervised_cnn"]
    assert "redshift.image.r2" in flat and "redshift.photometry.r2" in flat  # k-NN kept


def test_no_images_no_cnn_and_partial_truth_counts_known_rows(
    tables: dict[str, pa.Table],
) -> None:
    emb = tables["embeddings"]
    truth = tables["truth"].slice(0, 160)
    rep = evaluate(emb, tables["photometry"], truth, k=16, baselines=FAST)
    flat = rep.to_flat_dict()
    assert not any("supervised_cnn" in key for key in flat)
    test_ids = set(np.asarray(emb.column("targetid"))[np.array(emb["split"].to_pylist()) == "test"])
    known = len(test_ids & set(truth.column("targetid").to_pylist()))
    assert flat["log_mstar.image_mlp.n"] == known < rep.n_test
    assert flat["redshift.image_mlp.n"] == rep.n_test


def test_images_align_by_targetid_and_crop_from_pairs(tmp_path: Path) -> None:
    emb = synthetic_embeddings(6, dim=8, seed=5)
    pairs = synthetic_pairs_pixels(emb)
    pairs_file = Path(partition_file(str(tmp_path / "pairs"), 1234))
    pairs_file.parent.mkdir(parents=True)
    pq.write_table(pairs, pairs_file)
    crops = read_centre_crops(str(tmp_path / "pairs"), 20)
    assert crops.image_nmgy.shape == (6, 3, 20, 20)
    ids = emb.column("targetid").to_numpy()
    np.testing.assert_array_equal(crops.targetid, ids)
    reordered = crops.aligned(ids[::-1])
    np.testing.assert_array_equal(reordered, crops.image_nmgy[::-1])
    with pytest.raises(ValueError, match="no image for 1 of 2"):
        crops.aligned(np.array([ids[0], 12345]))
    with pytest.raises(ValueError, match="more than once"):
        GalaxyImages(ids[[0, 0]], crops.image_nmgy[:2]).aligned(ids[:1])


def test_comparison_table_has_the_paper_rows_and_ours(report: EvaluationReport) -> None:
    flat = report.to_flat_dict()
    text = comparison_markdown(flat)
    for row in PAPER_ROWS:
        assert (
            f"| AstroCLIP paper | {row.input} | {row.method} | {row.redshift_r2:.2f} | "
            f"{row.properties_r2:.2f} |" in text
        )
    ours = [r for r in comparison_rows(flat) if r[0] == "this run"]
    assert [r[2] for r in ours] == [r.method for r in OUR_ROWS]
    cnn = next(r for r in ours if "CNN" in r[2])
    mean = np.mean([flat[f"{p}.supervised_cnn.r2"] for p in OUR_PROPERTIES])
    assert cnn[3:] == (f"{flat['redshift.supervised_cnn.r2']:.2f}", f"{mean:.2f}")
    assert "t_age" in text and "log_mstar, metallicity, log_ssfr" in text
    # Without truth (real DESI data) the properties column is missing, not zero.
    no_props = {k: v for k, v in flat.items() if k.startswith("redshift.")}
    assert all(r[4] == MISSING for r in comparison_rows(no_props) if r[0] == "this run")


def _programs(emb: pa.Table, bright_every: int) -> pa.Table:
    """targetid + program: every ``bright_every``-th row bright, the rest dark."""
    ids = emb.column("targetid")
    program = ["bright" if i % bright_every == 0 else "dark" for i in range(len(ids))]
    return pa.table({"targetid": ids, "program": program})


def test_bgs_figures_are_the_bright_rows_evaluated_alone(tables: dict[str, pa.Table]) -> None:
    emb, phot, truth = tables["embeddings"], tables["photometry"], tables["truth"]
    programs = _programs(emb, 2)
    images = synthetic_galaxy_images(emb, size_pix=20)
    flat = evaluate(
        emb, phot, truth, k=16, images=images, baselines=FAST, programs=programs
    ).to_flat_dict()
    bright = np.array(programs["program"].to_pylist()) == "bright"
    split = np.array(emb["split"].to_pylist())
    assert flat["bgs.n_train"] == int((bright & (split == "train")).sum())
    assert flat["bgs.n_test"] == int((bright & (split == "test")).sum()) < flat["n_test"]
    # bank, training rows and queries all bright: the same figures as evaluating those rows alone
    alone = evaluate(emb.filter(pa.array(bright)), phot, truth, k=16, baselines=FAST).to_flat_dict()
    for query in ("image", "spectrum", "image_to_spectrum", "photometry", *MLP_QUERY_TYPES):
        for target in TARGETS:
            assert flat[f"bgs.{target}.{query}.r2"] == alone[f"{target}.{query}.r2"]
        assert flat[f"bgs.redshift.{query}.sigma_nmad"] == alone[f"redshift.{query}.sigma_nmad"]
    # ... and not the whole run's figures, nor a CNN (its CPU budget is spent once)
    assert flat["bgs.redshift.spectrum.r2"] != flat["redshift.spectrum.r2"]
    assert "redshift.supervised_cnn.r2" in flat
    assert not any(k.startswith("bgs.") and "supervised_cnn" in k for k in flat)
    assert "PROVABGS" in flat["definitions.bgs"]
    rows = comparison_rows(flat)
    bgs = [r for r in rows if r[0] == BGS_SOURCE]
    assert [r[2] for r in bgs] == [r.method for r in OUR_ROWS]
    spectrum = next(r for r in bgs if r[1] == "spectrum" and r[2].startswith("k-NN"))
    assert spectrum[3] == f"{flat['bgs.redshift.spectrum.r2']:.2f}"
    assert next(r for r in bgs if "CNN" in r[2])[3:] == (MISSING, MISSING)
    assert "PROVABGS" in comparison_markdown(flat)


def test_no_bgs_keys_without_programs_or_with_too_few_bright_rows(
    tables: dict[str, pa.Table], report: EvaluationReport
) -> None:
    emb, phot = tables["embeddings"], tables["photometry"]
    assert not any(k.startswith("bgs.") for k in report.to_flat_dict())
    assert not any(r[0] == BGS_SOURCE for r in comparison_rows(report.to_flat_dict()))
    n_test = int((np.array(emb["split"].to_pylist()) == "test").sum())
    few = _programs(emb, len(emb) // (BGS_MIN_TEST - 1))  # too few bright test rows
    assert n_test >= BGS_MIN_TEST
    flat = evaluate(emb, phot, k=16, baselines=FAST, programs=few).to_flat_dict()
    assert not any(k.startswith("bgs.") for k in flat)
    with pytest.raises(ValueError, match="lacks column 'program'"):
        evaluate(emb, phot, k=16, baselines=FAST, programs=emb.select(["targetid"]))
