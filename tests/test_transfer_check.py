"""The transfer check (astroclip_core.evaluation.transfer): the real LRG stack redshifted onto
the DESI grid lands its features where they belong, the noise follows the real coadds' ivar,
the k-NN recovers z from an embedding that encodes it (and not from one that does not), and
``astroclip transfer-check`` runs end to end on a micro model."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from pairs_fixture import micro_model_config, write_pairs_dir

from astroclip_core.cli import main
from astroclip_core.errors import FormatError
from astroclip_core.evaluation.transfer import (
    LRG_STACK,
    MASK_NODATA,
    NORM_WINDOW_ANGSTROM,
    NoisePool,
    RestTemplate,
    TransferConfig,
    ab_magnitude,
    predict_redshifts,
    read_noise_pool,
    read_rest_template,
    redshift_template,
    simulate_spectra,
    transfer_metrics,
)
from astroclip_core.formats.desi import N_WAVELENGTH, WAVELENGTH
from astroclip_core.model.clip import AstroClipModel
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.embeddings import embeddings_table, write_embeddings
from astroclip_core.tables.pairs import read_pairs
from astroclip_core.training.embed import embed_pairs

sys.path.insert(0, str(Path(__file__).parent))
CA_K_ANGSTROM = 3934.78  # vacuum rest wavelength of Ca II K


@pytest.fixture(scope="module")
def stack() -> RestTemplate:
    return read_rest_template()


@pytest.fixture(scope="module")
def pool() -> NoisePool:
    return read_noise_pool()


def test_the_stack_is_read_as_a_rest_frame_spectrum(stack: RestTemplate) -> None:
    assert stack.wave_angstrom.size == stack.flux.size == 11217
    assert 2487 < stack.wave_angstrom[0] < 2488 and 6973 < stack.wave_angstrom[-1] < 6974
    # an LRG: the 4000 A break, red side brighter than the blue by well over 1.5
    red = stack.flux[(stack.wave_angstrom > 4000) & (stack.wave_angstrom < 4100)].mean()
    blue = stack.flux[(stack.wave_angstrom > 3850) & (stack.wave_angstrom < 3950)].mean()
    assert red / blue > 1.5


@pytest.mark.parametrize("z", [0.3, 0.55, 0.8, 1.0])
def test_a_narrow_line_lands_at_its_observed_wavelength(z: float) -> None:
    wave = np.arange(2000.0, 8000.0, 0.4)
    line = 4500.0  # observed 5850-9000 A over these z
    template = RestTemplate("line", wave, 1.0 + 50.0 * np.exp(-0.5 * ((wave - line) / 1.0) ** 2))
    flux, covered = redshift_template(template, z)
    peak = WAVELENGTH[np.argmax(flux)]
    assert abs(peak - line * (1 + z)) <= 0.8  # within one 0.8 A pixel
    # flux conserved: the line's integral grows by (1 + z) in the observed frame
    area_rest = 50.0 * 1.0 * np.sqrt(2 * np.pi)
    area_obs = np.sum((flux - 1.0)[covered]) * 0.8
    assert area_obs == pytest.approx(area_rest * (1 + z), rel=1e-3)


@pytest.mark.parametrize("z", [0.3, 0.6, 1.0])
def test_the_stack_keeps_ca_k_and_the_4000_break_at_the_redshift(stack, z: float) -> None:
    flux, covered = redshift_template(stack, z)
    expected = CA_K_ANGSTROM * (1 + z)
    near = np.abs(WAVELENGTH - expected) < 15
    assert abs(WAVELENGTH[near][np.argmin(flux[near])] - expected) < 4  # the K line's core
    red = flux[(4000 * (1 + z) < WAVELENGTH) & (4100 * (1 + z) > WAVELENGTH)].mean()
    blue = flux[(3850 * (1 + z) < WAVELENGTH) & (3950 * (1 + z) > WAVELENGTH)].mean()
    assert red / blue > 1.5
    # coverage: observed pixels whose rest wavelength lies inside 2487-6974 A
    rest = WAVELENGTH / (1 + z)
    inside = (rest > stack.wave_angstrom[0] + 1) & (rest < stack.wave_angstrom[-1] - 1)
    assert covered[inside].all() and not covered[rest > stack.wave_angstrom[-1] + 1].any()


def test_a_tilted_stack_keeps_its_features_on_another_slope(stack: RestTemplate) -> None:
    from astroclip_core.evaluation.transfer import tilted_template

    red = tilted_template(stack, 1.0)
    wave = stack.wave_angstrom
    ratio = red.flux / stack.flux
    assert np.allclose(ratio, wave / 5000.0)  # the slope only
    flux, _ = redshift_template(red, 0.6)
    expected = CA_K_ANGSTROM * 1.6
    near = np.abs(WAVELENGTH - expected) < 15
    assert abs(WAVELENGTH[near][np.argmin(flux[near])] - expected) < 4  # the K line stays
    assert "5000" in red.name and red.wave_angstrom is wave


def _noiseless(pool: NoisePool) -> NoisePool:
    """A pool of the same rows with ivar 1e12 and no mask anywhere: no noise, no holes."""
    ivar = np.full(pool.ivar.shape, 1e12, np.float32)
    return NoisePool(ivar, np.zeros_like(pool.mask), pool.source)


def test_scaling_sets_the_fibre_magnitude(stack: RestTemplate, pool: NoisePool) -> None:
    config = TransferConfig(redshifts=(0.4, 0.9), n_draws=1, z_fiber_mag=20.5)
    sims = simulate_spectra(stack, _noiseless(pool), config)
    for row in range(2):
        assert ab_magnitude(sims.flux[row]) == pytest.approx(20.5, abs=1e-3)
    # 20.5 AB is ~9.4e-18 erg/s/cm2/A at 8650 A, i.e. ~0.94 in DESI units
    window = (NORM_WINDOW_ANGSTROM[0] < WAVELENGTH) & (NORM_WINDOW_ANGSTROM[1] > WAVELENGTH)
    assert 0.5 < sims.flux[0, window].mean() < 2.0


def test_luminosity_mode_dims_one_galaxy_with_distance(pool: NoisePool) -> None:
    # A template flat in f_lambda has no k-correction: the window's magnitude is the
    # distance term alone, 21.0 at z_ref = 0.7.
    wave = np.arange(2000.0, 8000.0, 0.4)
    flat = RestTemplate("flat", wave, np.ones_like(wave))
    zs = (0.3, 0.7, 1.0)
    config = TransferConfig(redshifts=zs, n_draws=1, magnitude_mode="luminosity")
    sims = simulate_spectra(flat, _noiseless(pool), config)
    mags = [ab_magnitude(f) for f in sims.flux]
    assert mags[1] == pytest.approx(21.0, abs=1e-3)
    assert mags == pytest.approx([config.target_magnitude(z) for z in zs], abs=1e-3)
    # flat LCDM (H0 70, Om 0.3): D_L 1548 Mpc at z 0.3 and 4225 Mpc at 0.7 -> 2.18 mag, and
    # the (1+z) bandwidth term 2.5 log10(1.3/1.7) = -0.29 mag
    assert mags[1] - mags[0] == pytest.approx(2.18 + 0.29, abs=0.02)
    with pytest.raises(ValueError, match="magnitude_mode"):
        TransferConfig(magnitude_mode="typo")


def test_noise_follows_the_real_ivar(stack: RestTemplate, pool: NoisePool) -> None:
    config = TransferConfig(redshifts=(0.5,), n_draws=40, seed=3)
    sims = simulate_spectra(stack, pool, config)
    clean = simulate_spectra(stack, _noiseless(pool), config).flux[0]
    assert len(set(sims.noise_row.tolist())) > 3  # draws from several real spectra
    pulls = []
    for row in range(len(sims.z)):
        real = pool.ivar[sims.noise_row[row]]
        good = sims.ivar[row] > 0
        np.testing.assert_array_equal(sims.ivar[row][good], real[good])  # ivar is the real one
        assert (sims.flux[row][~good] == 0).all()
        pulls.append((sims.flux[row] - clean)[good] * np.sqrt(real[good]))
    pull = np.concatenate(pulls)
    assert abs(pull.std() - 1.0) < 0.02 and abs(pull.mean()) < 0.02
    # outside the stack's rest coverage (blue of 2487 A x 1.5 = 3731 A): masked, ivar 0
    blue = WAVELENGTH < 2487 * 1.5 - 1
    assert (sims.ivar[:, blue] == 0).all() and (sims.mask[:, blue] & MASK_NODATA).all()


def test_the_noise_pool_holds_the_real_target_spectra(pool: NoisePool) -> None:
    assert pool.ivar.shape[1] == N_WAVELENGTH
    names = {s.rsplit(":", 1)[0] for s in pool.source}
    assert names == {
        "coadd-sv3-dark-26065.fits",
        "coadd-1-80693-thru20210204.fits",
        "everest-80605-0-first25-arms.fits",
    }
    # the sky fibre and the unassigned fibres of 26065 are not noise models
    assert [s for s in pool.source if s.startswith("coadd-sv3")] == [
        "coadd-sv3-dark-26065.fits:2",
        "coadd-sv3-dark-26065.fits:4",
    ]
    assert ((pool.ivar > 0).mean(axis=1) > 0.5).all()


def test_a_file_that_is_no_stack_is_refused(tmp_path: Path) -> None:
    import fitsio

    path = tmp_path / "bad.fits"
    fitsio.write(str(path), np.ones((1, 10), np.float32), extname="FLUX")
    with pytest.raises(FormatError, match="bad.fits.*WAVE"):
        read_rest_template(path)


def _circle_embedding(z: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    # (N, 8): z on an arc of a circle (a smooth, one-to-one function of z) plus noise
    angle = 2.0 * z
    emb = np.zeros((len(z), 8))
    emb[:, 0], emb[:, 1] = np.cos(angle), np.sin(angle)
    return emb + noise * rng.standard_normal(emb.shape)


def test_knn_recovers_z_from_an_embedding_that_encodes_it() -> None:
    rng = np.random.default_rng(0)
    bank_z = rng.uniform(0.0, 1.2, 5000)
    query_z = np.repeat(np.linspace(0.3, 1.0, 15), 4)
    good = predict_redshifts(
        _circle_embedding(query_z, 0.001, rng), _circle_embedding(bank_z, 0.001, rng), bank_z
    )
    result = transfer_metrics("synthetic", query_z, good, 21.0, bank_z)
    assert result.metrics.sigma_nmad < 0.01 and result.metrics.outlier_fraction == 0
    assert [r.z for r in result.per_z] == pytest.approx(np.linspace(0.3, 1.0, 15).tolist())
    # an embedding that carries no z: predictions collapse to the bank's middle
    bad = predict_redshifts(rng.standard_normal((60, 8)), rng.standard_normal((5000, 8)), bank_z)
    bad_result = transfer_metrics("synthetic", query_z, bad, 21.0, bank_z)
    assert bad_result.metrics.sigma_nmad > 0.05 and bad_result.metrics.outlier_fraction > 0.2
    flat = bad_result.to_flat_dict()
    assert flat["transfer.synthetic.outlier_fraction"] == bad_result.metrics.outlier_fraction
    assert flat["transfer.synthetic.z_0p300.median_pred"] == bad_result.per_z[0].median_pred


def test_cli_runs_end_to_end_on_a_micro_model(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    layout = StorageLayout(str(tmp_path / "storage"))
    model_dir = Path(layout.model_dir("edr", "micro-v1"))
    model = AstroClipModel(micro_model_config())
    model.save_pretrained(str(model_dir))
    write_pairs_dir(Path(layout.pairs_dir("edr")), 40, pixels=(7,))
    pairs = read_pairs(layout.pairs_file("edr", 7))
    image_emb, spectrum_emb = embed_pairs(model, pairs)
    table = embeddings_table(pairs, image_emb, spectrum_emb, "micro-v1")
    write_embeddings(layout, "edr", "micro-v1", 7, table)
    monkeypatch.setenv("ASTROCLIP_STORAGE", layout.root)
    out = tmp_path / "transfer.json"
    args = ["transfer-check", "--model", "micro-v1", "--n-z", "3", "--n-draws", "2", "--k", "5"]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "all: sigma_nmad" in printed
    flat = json.loads(out.read_text())
    assert flat["transfer.lrg_stack.n"] == 6
    n_train = sum(s == "train" for s in table.column("split").to_pylist())
    assert flat["transfer.lrg_stack.n_bank"] == n_train
    bank_z = np.asarray(table.column("z").to_pylist())
    for z in ("0p300", "0p650", "1p000"):  # k-NN means lie inside the bank's z range
        assert bank_z.min() <= flat[f"transfer.lrg_stack.z_{z}.median_pred"] <= bank_z.max()
    # a bad option value is a usage error (exit 2) naming it
    with pytest.raises(SystemExit) as err:
        main([*args, "--z-fiber-mag", "5"])
    assert err.value.code == 2
    assert "--z-fiber-mag 5" in capsys.readouterr().err


def test_the_default_stack_is_in_the_repository() -> None:
    assert LRG_STACK.exists(), f"{LRG_STACK} is missing (copy it from ../shared/realdata)"


# ---- training options that help transfer (astroclip_core.training.augment) ----

_PLAIN = dict(flips=False, rot90=False, random_crop=False, spectrum_scale_jitter_dex=0.0)


def _aug_batch(n: int = 64):
    from pairs_fixture import make_pairs_table

    from astroclip_core.tables.pairs import decode_pairs

    return decode_pairs(make_pairs_table(n, seed=4))


def test_transfer_options_are_off_by_default_and_leave_batches_unchanged() -> None:
    from astroclip_core.training.augment import AugmentConfig, batch_generator, train_inputs

    batch = _aug_batch(8)
    default = train_inputs(batch, 144, AugmentConfig(), batch_generator(0, 0, 5), view=True)
    explicit = AugmentConfig(
        spectrum_noise_jitter_dex=0.0, spectrum_sky_residual_scale=0.0, spectrum_mask_runs=0,
        spectrum_tilt_max=0.0,
    )  # fmt: skip
    again = train_inputs(batch, 144, explicit, batch_generator(0, 0, 5), view=True)
    assert torch.equal(default.flux, again.flux) and torch.equal(default.valid, again.valid)
    with pytest.raises(ValueError, match="spectrum_mask_runs"):
        AugmentConfig(spectrum_mask_runs=-1)


def test_noise_jitter_spreads_the_noise_level_over_spectra() -> None:
    from astroclip_core.training.augment import AugmentConfig, batch_generator, train_inputs

    batch = _aug_batch()
    ivar = torch.from_numpy(batch.ivar)
    good = ivar > 0

    def pull_std(cfg: AugmentConfig) -> torch.Tensor:
        out = train_inputs(batch, 144, cfg, batch_generator(0, 0, 1))
        pull = (out.flux - torch.from_numpy(batch.flux)) * ivar.sqrt()
        return torch.stack([pull[i][good[i]].std() for i in range(len(pull))])  # (B,)

    plain = pull_std(AugmentConfig(**_PLAIN))
    jitter = pull_std(AugmentConfig(**_PLAIN, spectrum_noise_jitter_dex=0.5))
    assert (plain - 1).abs().max() < 0.05  # one sigma everywhere without the option
    assert jitter.min() > 0.95 and jitter.max() < 10**0.5 * 1.05  # factors 1..10^0.5
    assert (jitter > 1.5).float().mean() > 0.2  # a good share of spectra made noisier


def test_sky_residuals_only_where_sigma_is_high() -> None:
    from astroclip_core.training.augment import SKY_SIGMA_RATIO, sky_residuals

    sigma = torch.ones(4, 2000)
    sigma[:, 500:505] = 5.0  # a sky line
    sigma[:, 1500:1503] = 3.0  # another
    valid = torch.ones(4, 2000, dtype=torch.bool)
    valid[:, 1500:1503] = False  # ... masked: no residual there
    res = sky_residuals(sigma, valid, 2.0, torch.Generator().manual_seed(0))
    sky = (sigma > SKY_SIGMA_RATIO) & valid
    assert (res[~sky] == 0).all() and (res[sky] != 0).all()
    # one line, one misfit: neighbouring pixels of the line are correlated
    many = sky_residuals(
        torch.where(torch.arange(2000) % 2 == 0, 5.0, 1.0).expand(256, 2000).clone(),
        torch.ones(256, 2000, dtype=torch.bool), 1.0, torch.Generator().manual_seed(1),
    )  # fmt: skip
    a, b = many[:, 1000] / 5.0, many[:, 1002] / 5.0
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.3
    assert 0.7 < a.std() < 1.3  # unit variance in sigma units after smoothing


def test_mask_runs_mark_contiguous_pixels_invalid() -> None:
    from astroclip_core.training.augment import (
        AugmentConfig,
        batch_generator,
        random_mask_runs,
        train_inputs,
    )

    runs = random_mask_runs((500, 7781), 3, 50, torch.Generator().manual_seed(2))
    per_row = runs.sum(dim=1)
    assert per_row.max() <= 3 * 50 and (per_row == 0).any() and (per_row > 50).any()
    edges = (runs[:, 1:] & ~runs[:, :-1]).sum(dim=1) + runs[:, 0]  # runs starting per row
    assert edges.max() <= 3
    batch = _aug_batch(16)
    plain = train_inputs(batch, 144, AugmentConfig(**_PLAIN), batch_generator(0, 0, 2))
    masked = train_inputs(
        batch, 144, AugmentConfig(**_PLAIN, spectrum_mask_runs=3), batch_generator(0, 0, 2)
    )
    assert (masked.valid <= plain.valid).all() and masked.valid.sum() < plain.valid.sum()


def test_continuum_tilt_is_a_power_law_per_spectrum_with_its_noise() -> None:
    from astroclip_core.training.augment import (
        TILT_PIVOT_ANGSTROM,
        AugmentConfig,
        batch_generator,
        train_inputs,
    )

    batch = _aug_batch(32)
    plain_cfg = AugmentConfig(**_PLAIN, spectrum_noise_scale=0.0)
    plain = train_inputs(batch, 144, plain_cfg, batch_generator(0, 0, 3))
    tilted = train_inputs(
        batch, 144, replace(plain_cfg, spectrum_tilt_max=0.8), batch_generator(0, 0, 3)
    )
    good = torch.from_numpy(batch.flux != 0)
    ratio = torch.where(good, tilted.flux / torch.where(good, plain.flux, 1.0), torch.nan)
    ln_wave = torch.from_numpy(np.log(WAVELENGTH / TILT_PIVOT_ANGSTROM))
    index = []
    for row in range(len(ratio)):
        keep = good[row]
        slope, intercept = np.polyfit(ln_wave[keep].numpy(), ratio[row][keep].log().numpy(), 1)
        assert abs(intercept) < 1e-4  # no change at the pivot: a pure power law
        fit = slope * ln_wave[keep] + intercept
        assert torch.allclose(ratio[row][keep].log(), fit.float(), atol=1e-4)
        index.append(slope)
    index = np.array(index)
    assert np.abs(index).max() <= 0.8 + 1e-6 and index.std() > 0.2  # spread over +-0.8
    # the noise is tilted too: sigma x tilt, i.e. ivar / tilt^2
    tilt = tilted.flux[good] / plain.flux[good]
    assert torch.allclose(tilted.ivar[good] * tilt**2, plain.ivar[good], rtol=1e-4)
    with pytest.raises(ValueError, match="spectrum_tilt_max"):
        AugmentConfig(spectrum_tilt_max=-0.1)


def test_without_the_stats_token_the_encoder_ignores_the_flux_level() -> None:
    from dataclasses import replace

    from astroclip_core.model.config import ModelConfig
    from astroclip_core.model.spectrum import SpectrumEncoder

    base = micro_model_config().spectrum
    rng = np.random.default_rng(0)
    flux = torch.from_numpy(rng.normal(1.0, 0.3, (3, N_WAVELENGTH)).astype(np.float32))
    valid = torch.ones_like(flux, dtype=torch.bool)
    for mode, invariant in (("full", False), ("none", True)):
        torch.manual_seed(0)
        encoder = SpectrumEncoder(replace(base, stats_token=mode)).eval()
        with torch.no_grad():
            same = torch.allclose(encoder(flux, valid), encoder(5.0 * flux, valid), atol=1e-5)
        assert same == invariant, mode
    with pytest.raises(ValueError, match="stats_token"):
        replace(base, stats_token="off")
    old = micro_model_config().to_dict()
    del old["spectrum"]["stats_token"]  # a config.json written before the option
    assert ModelConfig.from_dict(old).spectrum.stats_token == "full"
