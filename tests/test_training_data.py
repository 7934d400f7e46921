"""The pairs loader (epoch order, sharding, resume position) and the augmentations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from pairs_fixture import make_pairs_table, write_pairs_dir

from astroclip_core.formats import FormatError
from astroclip_core.tables.pairs import (
    PairArrays,
    decode_pairs,
    list_pairs_files,
    read_pairs_file,
)
from astroclip_core.tables.schemas import encode_blob
from astroclip_core.training.augment import (
    AugmentConfig,
    augment_images,
    batch_generator,
    eval_inputs,
    train_inputs,
)
from astroclip_core.training.data import PairsLoader, build_index


@pytest.fixture(scope="module")
def pairs_files(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("pairs")
    return write_pairs_dir(root, 40, pixels=(11, 12, 13))


def _train_ids(files: list[str]) -> np.ndarray:
    return np.concatenate([read_pairs_file(f, "train").targetid for f in files])


def test_list_pairs_files_finds_hive_files(pairs_files, tmp_path) -> None:
    root = str(Path(pairs_files[0]).parents[1])
    assert list_pairs_files(root) == list(zip((11, 12, 13), pairs_files, strict=True))
    with pytest.raises(FileNotFoundError, match="no pairs files under"):
        list_pairs_files(str(tmp_path))


def test_epoch_visits_each_train_row_at_most_once(pairs_files) -> None:
    index = build_index(pairs_files)
    train = _train_ids(pairs_files)
    assert index.total_rows == len(train)
    loader = PairsLoader(index, batch_size=8, seed=3, shuffle_window_rows=50)
    seen = np.concatenate([b.targetid for b in loader.iter_epoch(0)])
    assert len(seen) == loader.batches_per_epoch * 8 == (len(train) // 8) * 8
    assert len(np.unique(seen)) == len(seen)
    assert set(seen) <= set(train)


def test_ranks_take_disjoint_shards_of_the_same_global_batches(pairs_files) -> None:
    index = build_index(pairs_files)
    single = PairsLoader(index, batch_size=10, seed=1)
    ranks = [PairsLoader(index, batch_size=5, seed=1, rank=r, world_size=2) for r in (0, 1)]
    assert ranks[0].batches_per_epoch == single.batches_per_epoch
    for whole, b0, b1 in zip(single.iter_epoch(2), *(r.iter_epoch(2) for r in ranks), strict=True):
        assert not set(b0.targetid) & set(b1.targetid)
        assert set(b0.targetid) | set(b1.targetid) == set(whole.targetid)


def test_start_batch_continues_the_same_epoch(pairs_files) -> None:
    loader = PairsLoader(build_index(pairs_files), batch_size=8, seed=5)
    full = [b.targetid for b in loader.iter_epoch(1)]
    tail = [b.targetid for b in loader.iter_epoch(1, start_batch=3)]
    assert all(np.array_equal(a, b) for a, b in zip(full[3:], tail, strict=True))
    other = [b.targetid for b in loader.iter_epoch(2)]
    assert not np.array_equal(np.concatenate(full), np.concatenate(other))


def test_batch_rows_hold_their_own_pixels(pairs_files) -> None:
    by_id = {}
    for f in pairs_files:
        arrays = read_pairs_file(f, "train")
        by_id.update({t: (arrays, i) for i, t in enumerate(arrays.targetid)})
    batch = next(PairsLoader(build_index(pairs_files), batch_size=8, seed=0).iter_epoch(0))
    for j, tid in enumerate(batch.targetid):
        arrays, i = by_id[tid]
        assert np.array_equal(batch.image[j], arrays.image[i])
        assert np.array_equal(batch.flux[j], arrays.flux[i])
        assert np.array_equal(batch.mask[j], arrays.mask[i])


def test_too_few_rows_for_one_batch_raises(pairs_files) -> None:
    with pytest.raises(ValueError, match="cannot fill"):
        PairsLoader(build_index(pairs_files[:1]), batch_size=1000, seed=0)


def test_non_finite_pixels_raise_naming_the_file(tmp_path) -> None:
    table = make_pairs_table(4)
    flux = np.zeros((4, 7781), dtype=np.float32)
    flux[1, 10] = np.nan
    path = tmp_path / "bad.parquet"
    pq.write_table(
        table.set_column(table.schema.get_field_index("flux"), "flux", encode_blob("flux", flux)),
        path,
    )
    with pytest.raises(FormatError, match="bad.parquet.*non-finite"):
        read_pairs_file(str(path))


def _batch(n: int = 6) -> PairArrays:
    return decode_pairs(make_pairs_table(n, seed=9))


def test_train_inputs_shapes_and_reproducibility() -> None:
    batch = _batch()
    a = train_inputs(batch, 144, AugmentConfig(), batch_generator(0, 0, 7))
    b = train_inputs(batch, 144, AugmentConfig(), batch_generator(0, 0, 7))
    c = train_inputs(batch, 144, AugmentConfig(), batch_generator(0, 0, 8))
    assert a.image_nmgy.shape == (6, 3, 144, 144)
    assert torch.equal(a.image_nmgy, b.image_nmgy) and torch.equal(a.flux, b.flux)
    assert not torch.equal(a.flux, c.flux)


def test_random_crop_is_a_shift_of_at_most_4_px() -> None:
    batch = _batch()
    cfg = AugmentConfig(flips=False, rot90=False, spectrum_noise_scale=0.0)
    crops = train_inputs(batch, 144, cfg, batch_generator(1, 0, 0)).image_nmgy
    full = torch.from_numpy(batch.image)
    for i in range(len(crops)):
        matches = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if torch.equal(full[i, :, dy : dy + 144, dx : dx + 144], crops[i])
        ]
        assert len(matches) == 1


def test_flips_and_rotations_permute_pixels_per_sample() -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(32, 3, 8, 8, generator=g)
    cfg = AugmentConfig(random_crop=False)
    out = augment_images(image, 8, cfg, torch.Generator().manual_seed(1))
    assert torch.allclose(out.sum(dim=(2, 3)), image.sum(dim=(2, 3)))
    assert torch.allclose(out.sort(dim=-1).values.sum(), image.sort(dim=-1).values.sum())
    changed = [not torch.equal(out[i], image[i]) for i in range(32)]
    assert 20 <= sum(changed) < 32  # 7 of the 8 D4 elements change a random image


def test_spectrum_noise_follows_ivar_and_spares_masked_pixels() -> None:
    batch = _batch(64)
    cfg = AugmentConfig(flips=False, rot90=False, random_crop=False, spectrum_scale_jitter_dex=0.0)
    noisy = train_inputs(batch, 144, cfg, batch_generator(0, 0, 0))
    delta = noisy.flux - torch.from_numpy(batch.flux)
    ivar = torch.from_numpy(batch.ivar)
    assert torch.all(delta[ivar == 0] == 0)
    pulls = delta[ivar > 0] * ivar[ivar > 0].sqrt()
    assert 0.97 < pulls.std().item() < 1.03
    assert torch.equal(noisy.valid, torch.from_numpy((batch.mask == 0) & (batch.ivar > 0)))
    # the catalogue's ivar travels with the batch, for SpectrumEncoderConfig.pixel_weight="ivar"
    assert noisy.ivar is not None and torch.equal(noisy.ivar, ivar)


def test_eval_inputs_are_the_centre_crop_without_noise() -> None:
    batch = _batch()
    inputs = eval_inputs(batch, 144)
    assert torch.equal(inputs.image_nmgy, torch.from_numpy(batch.image[:, :, 4:148, 4:148]))
    assert torch.equal(inputs.flux, torch.from_numpy(batch.flux))
    assert inputs.ivar is not None and torch.equal(inputs.ivar, torch.from_numpy(batch.ivar))


def test_spectrum_scale_jitter_scales_each_spectrum_as_a_whole() -> None:
    batch = _batch(64)
    base = AugmentConfig(flips=False, rot90=False, random_crop=False, spectrum_noise_scale=0.0)
    jitter = AugmentConfig(
        flips=False,
        rot90=False,
        random_crop=False,
        spectrum_noise_scale=0.0,
        spectrum_scale_jitter_dex=0.3,
    )
    plain = train_inputs(batch, 144, base, batch_generator(0, 0, 0))
    scaled = train_inputs(batch, 144, jitter, batch_generator(0, 0, 0))
    assert torch.equal(plain.image_nmgy, scaled.image_nmgy)
    flux = torch.from_numpy(batch.flux)
    good = flux.abs() > 1e-3
    ratio = torch.where(good, scaled.flux / torch.where(good, flux, 1.0), torch.nan)
    per_row = ratio.nanmedian(dim=1).values  # (B,) one factor per spectrum
    assert torch.allclose(ratio[good], per_row[:, None].expand_as(ratio)[good], rtol=1e-5)
    log_ratio = per_row.log10()
    assert log_ratio.abs().max() <= 0.3 + 1e-6 and log_ratio.std() > 0.1
