"""Encoders and the full model: shapes, normalisation, masking, standardisation."""

from __future__ import annotations

import math

import pytest
import torch
from pairs_fixture import micro_model_config

from astroclip_core.model.clip import build_model
from astroclip_core.model.spectrum import standardise

L = 7781


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(micro_model_config()).eval()


def _inputs(b: int = 4, size: int = 152) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    image = torch.rand(b, 3, size, size, generator=g) * 0.1
    flux = torch.randn(b, L, generator=g) + 5.0
    valid = torch.rand(b, L, generator=g) > 0.05
    return image, flux, valid


def test_embeddings_are_unit_norm_with_embed_dim(model) -> None:
    image, flux, valid = _inputs()
    ei, es = model.encode_image(image), model.encode_spectrum(flux, valid)
    d = model.config.head.embed_dim
    assert ei.shape == es.shape == (4, d)
    assert torch.allclose(ei.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(es.norm(dim=1), torch.ones(4), atol=1e-5)


def test_152_px_cutout_is_centre_cropped_to_144(model) -> None:
    image, _, _ = _inputs()
    with torch.no_grad():
        assert torch.equal(model.encode_image(image), model.encode_image(image[..., 4:148, 4:148]))
    with pytest.raises(ValueError, match="smaller than"):
        model.encode_image(image[..., :100, :100])


def test_invalid_spectrum_pixels_do_not_change_the_embedding(model) -> None:
    _, flux, valid = _inputs()
    corrupted = torch.where(valid, flux, torch.full_like(flux, 1e6))
    with torch.no_grad():
        assert torch.allclose(
            model.encode_spectrum(flux, valid), model.encode_spectrum(corrupted, valid), atol=1e-6
        )


def test_standardise_uses_valid_pixels_and_keeps_stats() -> None:
    _, flux, valid = _inputs()
    flux = flux * 3.0
    x, stats = standardise(flux, valid)
    assert torch.all(x[~valid] == 0)
    mean = torch.stack([x[i][valid[i]].mean() for i in range(len(x))])
    std = torch.stack([x[i][valid[i]].std(unbiased=False) for i in range(len(x))])
    assert torch.allclose(mean, torch.zeros(4), atol=1e-4)
    assert torch.allclose(std, torch.ones(4), atol=1e-4)
    raw_std = torch.stack([flux[i][valid[i]].std(unbiased=False) for i in range(len(x))])
    assert torch.allclose(stats[:, 0], raw_std.log(), atol=1e-4)


def test_amplitude_reaches_the_embedding_through_the_stats_token(model) -> None:
    _, flux, valid = _inputs()
    with torch.no_grad():
        a = model.encode_spectrum(flux, valid)
        b = model.encode_spectrum(flux * 10.0, valid)
    assert not torch.allclose(a, b, atol=1e-4)


def test_forward_returns_finite_loss_terms_and_gradients(model) -> None:
    image, flux, valid = _inputs()
    model.train()
    terms = model(image, flux, valid)
    terms.loss.backward()
    assert torch.isfinite(terms.loss)
    assert 0.0 <= terms.accuracy.item() <= 1.0
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.zero_grad()
    model.eval()


def test_wrong_input_shapes_raise(model) -> None:
    with pytest.raises(ValueError, match="7781"):
        model.encode_spectrum(torch.zeros(2, 100), torch.ones(2, 100, dtype=torch.bool))
    with pytest.raises(ValueError, match="g,r,z"):
        model.encode_image(torch.zeros(2, 5, 152, 152))


def test_loglambda_positions_are_fixed_and_smooth_in_wavelength() -> None:
    from dataclasses import replace

    from astroclip_core.model.config import SpectrumEncoderConfig
    from astroclip_core.model.spectrum import SpectrumEncoder

    with pytest.raises(ValueError, match="position"):
        SpectrumEncoderConfig(width=32, depth=1, n_heads=2, position="rope")
    learned = SpectrumEncoderConfig(width=32, depth=1, n_heads=2, slice_pix=120, stride_pix=60)
    fixed = replace(learned, position="loglambda")
    enc = SpectrumEncoder(fixed)
    names = {n for n, _ in enc.named_parameters()}
    assert "pos_embed" not in names and "pos_embed" in {
        n for n, _ in SpectrumEncoder(learned).named_parameters()
    }
    assert "pos_embed" not in enc.state_dict()  # rebuilt from the config, never trained
    table = enc.pos_embed[0, 1:]  # (n_slices, width)
    assert table.shape == (fixed.n_slices, 32) and enc.pos_embed[0, 0].abs().sum() == 0
    sim = torch.nn.functional.cosine_similarity(table[60:61], table, dim=-1)  # (n_slices,)
    # Nearby wavelengths look alike, distant ones do not: the encoding is smooth in ln lambda.
    assert sim[60] == pytest.approx(1.0) and sim[61] > 0.4 and sim[59] > 0.4
    assert sim[61] > sim[70] and sim[59] > sim[50]
    assert sim[[0, 20, 100, 120]].abs().max() < 0.3


def test_loglambda_grid_makes_a_redshift_a_shift() -> None:
    """On grid='loglambda' a line at lambda sits at pixel ln(lambda / lambda_min) / step."""
    from astroclip_core.model.config import SpectrumEncoderConfig
    from astroclip_core.model.spectrum import loglambda_resampling

    cfg = SpectrumEncoderConfig(width=32, depth=1, n_heads=2, grid="loglambda")
    index, weight = loglambda_resampling(cfg)
    wave = 3600.0 + 0.8 * torch.arange(L, dtype=torch.float64)
    step = cfg.ln_lambda_step
    peaks = {}
    for rest in (4000.0, 5000.0):
        for z in (0.1, 0.5):
            line = rest * (1 + z)
            flux = torch.exp(-0.5 * ((wave - line) / 1.0) ** 2).float()
            resampled = flux[index] * (1 - weight) + flux[index + 1] * weight
            peaks[rest, z] = int(resampled.argmax())
            assert abs(peaks[rest, z] - math.log(line / 3600.0) / step) <= 1.0
    # The same change of redshift moves lines of different rest wavelength by the same number
    # of pixels (on the 0.8 A grid the redder line would move 1.25x as far).
    moved = [peaks[rest, 0.5] - peaks[rest, 0.1] for rest in (4000.0, 5000.0)]
    assert abs(moved[0] - moved[1]) <= 1
    with pytest.raises(ValueError, match="grid"):
        SpectrumEncoderConfig(width=32, depth=1, n_heads=2, grid="log")


def test_photometry_token_measures_aperture_fluxes() -> None:
    """The aperture masks have area pi r^2, and the token sees total flux and colour."""
    from dataclasses import replace

    from astroclip_core.model.image import aperture_masks

    masks = aperture_masks(144, (3.0, 12.0))
    assert masks.sum((1, 2)).tolist() == pytest.approx([math.pi * 9, math.pi * 144], rel=0.02)
    cfg = micro_model_config()
    cfg = replace(cfg, image=replace(cfg.image, aperture_radii_pix=(3.0, 12.0)))
    torch.manual_seed(0)
    m = build_model(cfg).eval()
    image = torch.zeros(2, 3, 152, 152)
    image[:, :, 75:77, 75:77] = torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1, 1)  # 4 px at centre
    image[1, :, :10, :10] = 5.0  # light outside the largest aperture
    seen = []
    m.image_encoder.phot_embed.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        tokens = m.image_encoder(image)
    assert tokens.shape[1] == 1 + cfg.image.n_tokens
    # Each band's total (4 px x value) over its scale times sqrt(aperture area), arcsinh'd.
    scales = torch.tensor(cfg.image.band_scales_nmgy).view(3, 1)
    area = torch.tensor([masks.sum((1, 2)).tolist()])  # (1, 2)
    total = 4 * torch.tensor([0.5, 1.0, 2.0]).view(3, 1)
    expected = torch.asinh(total / (scales * area.sqrt())).flatten()
    assert torch.allclose(seen[0][0], expected, rtol=1e-5)
    assert torch.equal(seen[0][0], seen[0][1])  # the outer light is not in the token
    with pytest.raises(ValueError, match="aperture_radii_pix"):
        replace(cfg.image, aperture_radii_pix=(100.0,))


def test_fast_asinh_matches_torch_asinh_and_stays_finite() -> None:
    from astroclip_core.model.image import fast_asinh

    x = torch.cat([torch.randn(10_000) * 10, torch.tensor([0.0, -0.0, 1e-8, -1e-3, 5e6, -1e30])])
    before = x.clone()
    got, want = fast_asinh(x), torch.asinh(x)
    assert torch.equal(x, before)  # the in-place steps work on its own buffer, not the input
    assert torch.isfinite(got).all()
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)
    assert torch.equal(fast_asinh(-x), -got)  # odd, like asinh


def test_cpu_bf16_attention_matches_scaled_dot_product_attention() -> None:
    """bf16 on CPU (two matmuls and a softmax) computes what SDPA computes, gradients too;
    float32 is SDPA itself."""
    import torch.nn.functional as F

    from astroclip_core.model.blocks import attention

    g = torch.Generator().manual_seed(3)
    qkv = [torch.randn(2, 4, 37, 24, generator=g).bfloat16().requires_grad_() for _ in range(3)]
    exact = [t.detach().float().requires_grad_() for t in qkv]  # the same values in float32
    got = attention(*qkv)
    want = F.scaled_dot_product_attention(*exact)
    assert got.dtype == torch.bfloat16 and got.shape == (2, 4, 37, 24)
    assert torch.allclose(got.float(), want, atol=0.03)  # bf16 keeps ~3 significant digits
    grads = torch.autograd.grad(got.float().square().sum(), qkv)
    want_grads = torch.autograd.grad(want.square().sum(), exact)
    for a, b in zip(grads, want_grads, strict=True):
        assert torch.allclose(a.float(), b, atol=0.1, rtol=0.05)
    assert torch.equal(attention(*exact), want)  # float32: SDPA unchanged


def _ivar_weighted_model():
    from dataclasses import replace

    cfg = micro_model_config()
    cfg = replace(cfg, spectrum=replace(cfg.spectrum, pixel_weight="ivar"))
    torch.manual_seed(0)
    return build_model(cfg).eval()


def test_ivar_pixel_weight_discounts_noisy_pixels() -> None:
    """With pixel_weight="ivar", a spike where the ivar says the pixel is 10^4 times noisier
    than usual moves the embedding far less than the same spike on a typical pixel."""
    weighted = _ivar_weighted_model()
    _, flux, valid = _inputs()
    ivar = torch.ones_like(flux)
    sky = slice(3000, 3010)  # a "sky line": ten pixels with 1e-4 of the typical ivar
    ivar[:, sky] = 1e-4
    spiked = flux.clone()
    spiked[:, sky] += 50.0
    with torch.no_grad():
        base = weighted.encode_spectrum(flux, valid, ivar)
        on_sky = weighted.encode_spectrum(spiked, valid, ivar)
        typical = weighted.encode_spectrum(spiked, valid, torch.ones_like(flux))
    moved_sky = (on_sky - base).norm(dim=1)
    moved_typical = (typical - base).norm(dim=1)
    assert torch.all(moved_sky < 0.05 * moved_typical), (moved_sky, moved_typical)
    with pytest.raises(ValueError, match="pass ivar"):
        weighted.encode_spectrum(flux, valid)


def test_ivar_pixel_weight_with_uniform_ivar_is_the_valid_mask(model) -> None:
    """Uniform ivar gives every valid pixel weight 1: the same embedding as pixel_weight="valid"
    (same seed, same parameters), whatever the ivar's level."""
    weighted = _ivar_weighted_model()
    _, flux, valid = _inputs()
    with torch.no_grad():
        plain = model.encode_spectrum(flux, valid)
        for level in (1.0, 37.5):
            got = weighted.encode_spectrum(flux, valid, torch.full_like(flux, level))
            assert torch.allclose(got, plain, atol=1e-5)
    with pytest.raises(ValueError, match="pixel_weight must be"):
        from astroclip_core.model.config import SpectrumEncoderConfig

        SpectrumEncoderConfig(width=8, depth=1, n_heads=1, pixel_weight="sqrt")


def test_embed_spectra_passes_the_ivar_to_a_weighted_encoder() -> None:
    """The user-facing embed_spectra (and so the transfer check) weighs pixels as training did."""
    import numpy as np

    from astroclip_core.embed import embed_spectra

    weighted = _ivar_weighted_model()
    _, flux, valid = _inputs(b=3)
    ivar = np.ones(flux.shape, dtype=np.float32)
    mask = (~valid.numpy()).astype(np.int32)
    noisy_ivar = ivar.copy()
    noisy_ivar[:, 2000:4000] = 1e-3
    same = embed_spectra(weighted, flux.numpy(), ivar, mask)
    with torch.no_grad():
        direct = weighted.encode_spectrum(flux, valid, torch.from_numpy(ivar)).numpy()
    np.testing.assert_allclose(same, direct, atol=1e-5)
    other = embed_spectra(weighted, flux.numpy(), noisy_ivar, mask)
    assert np.abs(other - same).max() > 1e-3


def test_running_continuum_is_the_weighted_window_mean() -> None:
    from astroclip_core.model.spectrum import running_continuum

    gen = torch.Generator().manual_seed(0)
    flux = torch.randn(3, 2000, generator=gen) * 3 + 50
    weight = (torch.rand(3, 2000, generator=gen) > 0.2).float() * torch.rand(3, 2000, generator=gen)
    weight[1, 900:1100] = 0.0  # a masked stretch wider than the window
    got = running_continuum(flux, weight, 101)
    for i in (0, 10, 1000, 1500, 1999):
        lo, hi = max(0, i - 50), min(2000, i + 51)
        w = weight[:, lo:hi]
        expected = (flux[:, lo:hi] * w).sum(1) / w.sum(1).clamp_min(1e-30)
        expected = torch.where(w.sum(1) > 0, expected, 0.0)
        assert torch.allclose(got[:, i], expected, rtol=1e-5, atol=1e-3), i


def test_continuum_window_hides_the_continuum_colour_from_the_slices() -> None:
    """With continuum_window_pix, a smooth tilt of the continuum (lines unchanged) moves the
    slice tokens far less than without; the statistics token still sees it."""
    from dataclasses import replace

    from astroclip_core.model.config import SpectrumEncoderConfig
    from astroclip_core.model.spectrum import SpectrumEncoder

    wave = torch.linspace(3600.0, 9824.0, 7781)
    lines = sum(20.0 * torch.exp(-0.5 * ((wave - c) / 2.0) ** 2) for c in (4500.0, 6700.0, 8100.0))
    flat = (2.0 + lines)[None]  # (1, L)
    tilted = (2.0 * (wave / 6000.0) ** 1.5 + lines)[None]
    valid = torch.ones_like(flat, dtype=torch.bool)
    base = SpectrumEncoderConfig(width=16, depth=1, n_heads=2, slice_pix=120, stride_pix=60)
    moved = {}
    for window in (0, 501):
        torch.manual_seed(0)
        encoder = SpectrumEncoder(replace(base, continuum_window_pix=window)).eval()
        with torch.no_grad():
            a, b = encoder(flat, valid), encoder(tilted, valid)  # (1, 1 + n_slices, C)
        moved[window] = ((a - b)[:, 1:].norm() / a[:, 1:].norm()).item()
    assert moved[501] < 0.2 * moved[0], moved
    with pytest.raises(ValueError, match="continuum_window_pix"):
        replace(base, continuum_window_pix=500)
    # continuum_bins: one more token, the broad shape, which does see the tilt
    torch.manual_seed(0)
    encoder = SpectrumEncoder(replace(base, continuum_window_pix=501, continuum_bins=16)).eval()
    with torch.no_grad():
        a, b = encoder(flat, valid), encoder(tilted, valid)
    assert a.shape[1] == 1 + base.n_slices + 1
    slices_moved = ((a - b)[:, 1:-1].norm() / a[:, 1:-1].norm()).item()
    token_moved = ((a - b)[:, -1].norm() / a[:, -1].norm()).item()
    assert token_moved > 5 * slices_moved, (token_moved, slices_moved)
    with pytest.raises(ValueError, match="continuum_bins"):
        replace(base, continuum_bins=16)  # no window
