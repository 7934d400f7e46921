"""Metrics, k-NN and retrieval ranks on hand-made arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from astroclip_core.evaluation.knn import (
    inverse_distance_weights,
    knn_regress,
    l2_normalise,
    nearest_neighbours,
    top_k_inner_product,
)
from astroclip_core.evaluation.metrics import (
    outlier_fraction,
    r2_score,
    redshift_metrics,
    sigma_nmad,
)
from astroclip_core.evaluation.photometry import asinh_magnitude, photometry_features, standardise
from astroclip_core.evaluation.retrieval import partner_ranks, retrieval_metrics


def test_sigma_nmad_by_hand() -> None:
    x = np.array([0.0, 0.01, -0.01, 0.02, 0.5])
    # median 0.01; |x - 0.01| = 0.01, 0, 0.02, 0.01, 0.49 -> median 0.01
    assert sigma_nmad(x) == pytest.approx(1.4826 * 0.01)


def test_outlier_fraction_and_bias_by_hand() -> None:
    z_true = np.array([0.0, 1.0, 0.5, 0.2])
    z_pred = np.array([0.2, 1.0, 0.5 + 0.1 * 1.5, 0.2 - 0.16 * 1.2])
    m = redshift_metrics(z_true, z_pred)
    # dz/(1+z) = 0.2, 0, 0.1, -0.16 -> two beyond 0.15
    assert m.outlier_fraction == pytest.approx(0.5)
    assert m.bias == pytest.approx(np.median([0.2, 0.0, 0.1, -0.16]))
    assert m.mean_bias == pytest.approx(np.mean([0.2, 0.0, 0.1, -0.16]))
    assert m.n == 4
    assert outlier_fraction(np.array([0.15, -0.15, 0.1500001])) == pytest.approx(1 / 3)


def test_r2_perfect_mean_and_constant() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert r2_score(y, y) == 1.0
    assert r2_score(y, np.full(4, y.mean())) == pytest.approx(0.0)
    assert r2_score(y, y[::-1]) == pytest.approx(1 - 20 / 5)
    assert np.isnan(r2_score(np.ones(3), np.array([1.0, 2.0, 3.0])))


def test_metrics_reject_nan_and_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="NaN"):
        r2_score(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="one length"):
        redshift_metrics(np.zeros(3), np.zeros(2))


def _brute_force_knn(query: np.ndarray, bank: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    out = np.empty(len(query))
    for i, q in enumerate(query):
        d = np.sqrt(((bank - q) ** 2).sum(axis=1))
        nn = np.argsort(d)[:k]
        w = 1.0 / d[nn]
        out[i] = (w * values[nn]).sum() / w.sum()
    return out


def test_knn_matches_brute_force_reference() -> None:
    rng = np.random.default_rng(3)
    bank = l2_normalise(rng.normal(size=(300, 8)))
    query = l2_normalise(rng.normal(size=(40, 8)))
    values = rng.normal(size=300)
    got = knn_regress(query, bank, values, k=7)
    np.testing.assert_allclose(got, _brute_force_knn(query, bank, values, 7), rtol=1e-5)


def test_nearest_neighbours_is_euclidean_on_unnormalised_features() -> None:
    rng = np.random.default_rng(4)
    bank = rng.normal(size=(200, 3)) * np.array([1.0, 10.0, 0.1])
    query = rng.normal(size=(25, 3))
    nn = nearest_neighbours(query, bank, k=5)
    ref_d = np.sqrt(((query[:, None, :] - bank[None]) ** 2).sum(-1))
    np.testing.assert_array_equal(nn.index, np.argsort(ref_d, axis=1)[:, :5])
    np.testing.assert_allclose(nn.distance, np.sort(ref_d, axis=1)[:, :5], rtol=1e-12)


def test_exact_copy_takes_all_weight() -> None:
    bank = l2_normalise(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    query = bank[2:3].copy()
    assert knn_regress(query, bank, np.array([10.0, 20.0, 7.0]), k=3)[0] == pytest.approx(7.0)
    w = inverse_distance_weights(np.array([[1.0, 2.0], [0.0, 3.0]]))
    np.testing.assert_allclose(w, [[2 / 3, 1 / 3], [1.0, 0.0]])


def test_top_k_is_chunk_invariant(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    bank, query = rng.normal(size=(50, 4)), rng.normal(size=(30, 4))
    full = top_k_inner_product(query, bank, 6)
    monkeypatch.setattr("astroclip_core.evaluation.knn.CHUNK_ELEMENTS", 60)  # one query per chunk
    chunked = top_k_inner_product(query, bank, 6)
    np.testing.assert_array_equal(full[0], chunked[0])
    np.testing.assert_array_equal(full[0], np.argsort(-(query @ bank.T), axis=1)[:, :6])
    with pytest.raises(ValueError, match="k=51"):
        top_k_inner_product(query, bank, 51)


def test_l2_normalise_rejects_zero_and_nan_rows() -> None:
    with pytest.raises(ValueError, match="all zeros"):
        l2_normalise(np.array([[1.0, 0.0], [0.0, 0.0]]), "image_embedding")
    with pytest.raises(ValueError, match="image_embedding: 1 rows hold NaN"):
        l2_normalise(np.array([[np.nan, 0.0]]), "image_embedding")


def test_partner_ranks_by_hand_and_ties_count_against() -> None:
    query = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    bank = np.array([[1.0, 0.1], [1.0, 0.0], [1.0, 1.0]])
    # q0: sims to bank 0.995, 1.0, 0.707 -> partner second; q1 -> partner third; q2 -> first
    np.testing.assert_array_equal(partner_ranks(query, bank), [2, 3, 1])
    same = np.ones((5, 3))
    np.testing.assert_array_equal(partner_ranks(same, same), [5] * 5)


def test_retrieval_of_identical_and_random_embeddings() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(400, 16))
    exact = retrieval_metrics(x, x + 1e-6 * rng.normal(size=x.shape))
    assert (exact.recall_at_1, exact.median_rank, exact.n) == (1.0, 1.0, 400)
    rand = retrieval_metrics(x, rng.normal(size=(400, 16)))
    assert 150 < rand.median_rank < 250  # about N/2
    assert rand.recall_at_10 < 0.1


def test_asinh_magnitudes_match_pogson_when_bright_and_stay_finite() -> None:
    flux = np.array([100.0, 1.0, 0.0, -0.5])
    mag = asinh_magnitude(flux, 0.05)
    assert mag[0] == pytest.approx(22.5 - 2.5 * np.log10(100.0), abs=1e-4)
    assert np.isfinite(mag).all()
    assert np.all(np.diff(mag) > 0)  # fainter -> larger magnitude, through zero


def test_photometry_features_and_standardise() -> None:
    import pyarrow as pa

    table = pa.table({"flux_g": [1.0, 2.0], "flux_r": [2.0, 4.0], "flux_z": [4.0, -1.0]})
    feats = photometry_features(table)
    assert feats.shape == (2, 3)
    assert feats[0, 0] == pytest.approx(2.5 * np.log10(2.0), abs=0.01)  # g - r
    train, other = standardise(feats, feats[:1])
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(other, train[:1])
    bad = pa.table({"flux_g": [1.0, None], "flux_r": [1.0, 1.0], "flux_z": [1.0, 1.0]})
    with pytest.raises(ValueError, match="flux_g"):
        photometry_features(bad)
