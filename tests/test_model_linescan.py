"""The fixed line scan, its encoder tokens and the scan-view loss term."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from pairs_fixture import make_pairs_table, micro_model_config, write_pairs_dir

from astroclip_core.model.clip import build_model
from astroclip_core.model.config import ModelConfig, ScanViewConfig, SpectrumEncoderConfig
from astroclip_core.model.linescan import (
    LINE_GROUPS,
    N_CHANNELS,
    fine_line_scan,
    line_scan_matrix,
    trial_ln1pz,
)
from astroclip_core.model.loss import info_nce
from astroclip_core.model.spectrum import (
    SpectrumEncoder,
    pixel_weights,
    standardise,
    wavelength_angstrom,
)
from astroclip_core.tables.pairs import decode_pairs
from astroclip_core.training.augment import AugmentConfig, batch_generator, train_inputs
from astroclip_core.training.config import TrainConfig
from astroclip_core.training.train import main

WAVE = 3600.0 + 0.8 * np.arange(7781)
N_Z = 96
LNZ_MAX = math.log(2.6)
CHANNEL = {name: c for c, (name, _, _) in enumerate(LINE_GROUPS)}


def _line(rest_angstrom: float, z: float, amplitude: float, sigma_angstrom: float = 2.0):
    centre = rest_angstrom * (1 + z)
    return amplitude * np.exp(-0.5 * ((WAVE - centre) / sigma_angstrom) ** 2)


def _responses(flux: np.ndarray) -> np.ndarray:
    """(n_z, channels) responses of one standardised spectrum."""
    x = (flux - flux.mean()) / flux.std()
    m = line_scan_matrix(WAVE, N_Z, LNZ_MAX).numpy()
    return (x @ m).reshape(N_Z, N_CHANNELS)


def _bin_of(z: float) -> int:
    return int(math.log1p(z) / (LNZ_MAX / N_Z))


def test_columns_have_unit_norm_and_line_kernels_ignore_a_smooth_continuum() -> None:
    m = line_scan_matrix(WAVE, N_Z, LNZ_MAX).numpy()
    norms = np.linalg.norm(m, axis=0)
    assert m.shape == (7781, N_Z * N_CHANNELS)
    assert np.allclose(norms[norms > 0], 1.0, atol=1e-5)
    # a tilted, smooth continuum: the compensated line kernels give ~0 (the break kernel may not)
    continuum = np.linspace(1.0, 3.0, 7781)
    line_part = (continuum @ m).reshape(N_Z, N_CHANNELS)[:, :-1]
    assert np.abs(line_part).max() < 0.05 * np.abs(continuum @ np.abs(m)).max()


def test_emission_lines_peak_at_their_redshift() -> None:
    z = 0.3
    rng = np.random.default_rng(0)
    flux = 2.0 + rng.normal(0.0, 0.3, 7781)
    for rest in (3728.48, 4862.68, 5008.24, 6564.61):
        flux += _line(rest, z, 3.0)
    r = _responses(flux)
    for name in ("[O II]", "H beta + [O III]", "H alpha + [N II] + [S II]"):
        assert abs(int(np.argmax(r[:, CHANNEL[name]])) - _bin_of(z)) <= 1, name
    # the peak stands far above the noise (responses are in units of the spectrum's std)
    assert r[:, CHANNEL["[O II]"]].max() > 5 * np.median(np.abs(r[:, CHANNEL["[O II]"]]))


def test_absorption_and_the_4000_break_respond_positively_at_their_redshift() -> None:
    z = 0.5
    blue = np.less(WAVE, 4000.0 * (1 + z))
    flux = np.where(blue, 1.0, 2.0)  # a 4000 A break at z
    for rest in (3934.78, 3969.59):
        flux -= _line(rest, z, 0.6, sigma_angstrom=6.0)
    r = _responses(flux)
    assert abs(int(np.argmax(r[:, CHANNEL["Ca K + Ca H"]])) - _bin_of(z)) <= 1
    assert abs(int(np.argmax(r[:, -1])) - _bin_of(z)) <= 1
    assert r[_bin_of(z), -1] > 0


def test_trial_redshifts_are_bin_centres() -> None:
    lnz = trial_ln1pz(4, 1.0)
    assert np.allclose(lnz, [0.125, 0.375, 0.625, 0.875])


def _fine_responses(flux: np.ndarray) -> np.ndarray:
    """(n_z, channels) fine-scan responses of one standardised spectrum."""
    x = torch.tensor((flux - flux.mean()) / flux.std(), dtype=torch.float32)[None]
    valid = torch.ones_like(x, dtype=torch.bool)
    return fine_line_scan(x, valid, WAVE, N_Z, LNZ_MAX).numpy().reshape(N_Z, N_CHANNELS)


def test_fine_scan_finds_lines_breaks_and_absorption_at_their_redshift() -> None:
    rng = np.random.default_rng(1)
    z = 0.3
    flux = 2.0 + rng.normal(0.0, 0.3, 7781)
    # with [N II] and [S II] beside H alpha: with H alpha alone, [S II] 6718 A at z = 0.27 would
    # read it as well as H alpha at z = 0.3 does (line-width kernels, one line of four each)
    for rest in (3728.48, 4862.68, 5008.24, 6564.61, 6585.27, 6718.29, 6732.67):
        flux += _line(rest, z, 3.0 if rest < 6600 else 1.0)
    r = _fine_responses(flux)
    for name in ("[O II]", "H beta + [O III]", "H alpha + [N II] + [S II]"):
        assert abs(int(np.argmax(r[:, CHANNEL[name]])) - _bin_of(z)) <= 1, name
    z = 0.5
    blue = np.less(WAVE, 4000.0 * (1 + z))
    flux = np.where(blue, 1.0, 2.0) + rng.normal(0.0, 0.05, 7781)
    for rest in (3934.78, 3969.59):
        flux -= _line(rest, z, 0.6, sigma_angstrom=3.0)
    r = _fine_responses(flux)
    assert abs(int(np.argmax(r[:, CHANNEL["Ca K + Ca H"]])) - _bin_of(z)) <= 1
    assert abs(int(np.argmax(r[:, -1])) - _bin_of(z)) <= 1
    assert r[_bin_of(z), -1] > 0
    # a smooth continuum alone: the line channels stay near zero, far below a line's response
    smooth = _fine_responses(np.linspace(1.0, 3.0, 7781) + 0.001 * np.sin(WAVE / 700.0))
    assert np.abs(smooth[:, :-1]).max() < 0.02 * np.abs(r[:, :-1]).max()


def test_fine_scan_keeps_more_of_a_narrow_line_than_the_matrix_scan() -> None:
    # One [O II] line of DESI width (sigma 2 A; a matched filter would find it at S/N ~8) at
    # z = 1.2, where it is the only line on the grid, in unit white noise: the peak of each
    # scan's [O II] channel over the spread of its line-free trial redshifts (each scan's
    # detection S/N). Measured: medians 2.9 (matrix) and 6.1 (fine) over these 8 draws.
    z = 1.2
    snr = {"matrix": [], "fine": []}
    for seed in range(8):
        flux = np.random.default_rng(seed).normal(0.0, 1.0, 7781) + _line(3728.48, z, 4.0)
        for name, r in (("matrix", _responses(flux)), ("fine", _fine_responses(flux))):
            col = r[:, CHANNEL["[O II]"]]
            far = np.abs(np.arange(N_Z) - _bin_of(z)) > 5
            snr[name].append((col[_bin_of(z) - 1 : _bin_of(z) + 2].max() - np.median(col[far]))
                             / col[far].std())  # fmt: skip
    assert np.median(snr["fine"]) > 1.3 * np.median(snr["matrix"]), snr
    assert np.median(snr["fine"]) > 5.0, snr


def test_fine_scan_mode_replaces_the_matrix_and_is_checked() -> None:
    cfg = replace(micro_model_config().spectrum, line_scan_n_z=24, line_scan_mode="fine")
    enc = SpectrumEncoder(cfg)
    assert not hasattr(enc, "line_scan_kernels")
    flux, valid = torch.randn(3, 7781), torch.ones(3, 7781, dtype=torch.bool)
    scan = enc.line_scan(flux, valid)
    assert scan.shape == (3, 24 * N_CHANNELS)
    # the encoder's kept grid gives what the function computes afresh
    x, _ = standardise(flux, pixel_weights(valid, None, cfg.pixel_weight))
    fresh = fine_line_scan(x, valid, wavelength_angstrom(cfg), 24, cfg.line_scan_lnz_max)
    assert torch.allclose(scan, fresh)
    with pytest.raises(ValueError, match="line_scan_mode must be 'matrix' or 'fine'"):
        replace(cfg, line_scan_mode="coarse")


def _scan_config(**kw) -> ModelConfig:
    base = micro_model_config()
    spectrum = replace(base.spectrum, line_scan_n_z=24, line_scan_tokens=kw.pop("tokens", 4))
    return replace(base, spectrum=spectrum, scan_view=ScanViewConfig(**kw))


def test_encoder_appends_one_token_per_group_of_trial_redshifts() -> None:
    cfg = _scan_config().spectrum
    enc = SpectrumEncoder(cfg)
    flux, valid = torch.randn(3, 7781), torch.ones(3, 7781, dtype=torch.bool)
    assert enc(flux, valid).shape == (3, 1 + cfg.n_slices + 4, cfg.width)
    assert enc.line_scan(flux, valid).shape == (3, 24 * N_CHANNELS)
    assert np.allclose(wavelength_angstrom(cfg)[[0, -1]], [3600.0, 3600.0 + 0.8 * 7780])
    with pytest.raises(ValueError, match="must divide"):
        replace(cfg, line_scan_tokens=5)
    # off by default: no scan, so asking for one is an error
    assert SpectrumEncoderConfig(width=8, depth=1, n_heads=2).line_scan_n_z == 0
    with pytest.raises(ValueError, match="no line scan"):
        SpectrumEncoder(micro_model_config().spectrum).line_scan(flux, valid)
    with pytest.raises(ValueError, match="needs spectrum.line_scan_n_z"):
        replace(micro_model_config(), scan_view=ScanViewConfig(weight=0.5))


def test_scan_view_adds_its_weighted_term_to_the_loss() -> None:
    torch.manual_seed(0)
    model = build_model(_scan_config(weight=0.5))
    g = torch.Generator().manual_seed(2)
    image = torch.rand(4, 3, 152, 152, generator=g)
    flux = torch.randn(4, 7781, generator=g) + 3
    valid = torch.ones(4, 7781, dtype=torch.bool)
    view = flux + 0.1 * torch.randn(4, 7781, generator=g)
    terms = model(image, flux, valid, view)
    spectrum = model.spectrum_features(flux, valid)
    expected_view = info_nce(
        spectrum,
        model.scan_view_head(model.spectrum_encoder.line_scan(view, valid)),
        terms.logit_scale,
    )
    assert torch.allclose(terms.loss_view, expected_view, atol=1e-5)
    assert torch.allclose(
        terms.loss, 0.5 * (terms.loss_i2s + terms.loss_s2i) + 0.5 * terms.loss_view
    )
    with pytest.raises(ValueError, match="view_flux"):
        model(image, flux, valid)
    assert ModelConfig.from_dict(model.config.to_dict()) == model.config
    # the plain model ignores the term
    plain = build_model(micro_model_config())
    assert plain(image, flux, valid).loss_view is None


def test_view_flux_is_an_independent_noise_draw_that_leaves_the_other_draws_alone() -> None:
    batch = decode_pairs(make_pairs_table(6, seed=9))
    a = train_inputs(batch, 144, AugmentConfig(), batch_generator(0, 0, 3))
    b = train_inputs(batch, 144, AugmentConfig(), batch_generator(0, 0, 3), view=True)
    assert a.view_flux is None and b.view_flux is not None
    assert torch.equal(a.flux, b.flux) and torch.equal(a.image_nmgy, b.image_nmgy)
    clean = torch.from_numpy(batch.flux)
    good = torch.from_numpy(batch.ivar) > 0
    # both draws carry noise, and not the same noise
    assert not torch.allclose(b.view_flux[good], clean[good])
    n1 = (a.flux / (a.flux / clean).median(dim=1, keepdim=True).values - clean)[good]
    n2 = (b.view_flux - clean)[good]
    assert abs(float(torch.corrcoef(torch.stack([n1, n2]))[0, 1])) < 0.2


def test_training_with_the_scan_view_logs_it_and_reproduces(tmp_path) -> None:
    write_pairs_dir(tmp_path / "pairs", 24, pixels=(21,))

    def run(name: str):
        return main(
            TrainConfig(
                out_dir=str(tmp_path / name),
                model=_scan_config(weight=0.5),
                pairs_dir=str(tmp_path / "pairs"),
                steps=3,
                batch_size=8,
                warmup_steps=1,
                log_every=1,
                num_threads=1,
                device="cpu",
            )
        )

    first, second = run("a"), run("b")
    history = pq.read_table(first.paths["history"]).to_pylist()
    assert len(history) == 3 and all(math.isfinite(row["loss_view"]) for row in history)
    assert all(row["loss"] > 0.5 * (row["loss_i2s"] + row["loss_s2i"]) for row in history)
    assert first.final_loss == second.final_loss
