"""Catalogue columns in the real layouts: sweep rows, and the per-release observation rows
(ZCATALOG / FIBERMAP / REDSHIFTS) of the targets, including the traps the selection removes.

An observation row is one (target, survey, program) spectrum. A release observes a target
when its rank is below the release's target fraction; a target first seen by an earlier
release keeps that release's survey, and a "repeat" target gets a second row in another
survey, of which only the longer exposure carries ZCAT_PRIMARY (and SV_PRIMARY among SV rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astroclip_core.samplesky.config import ReleaseFootprint, SampleSkyConfig
from astroclip_core.samplesky.ids import brick_conditions, hash_uniform, source_key
from astroclip_core.samplesky.photometry import mw_transmission
from astroclip_core.samplesky.sky import Sources, Targets, pixel_rng
from astroclip_core.sky.healpix import DESI_NSIDE, pixels_of

STREAM_ROWS = 500
# DESI_TARGET bits (desitarget main survey mask).
DESI_TARGET_BITS = {"LRG": 1 << 0, "ELG": 1 << 1, "QSO": 1 << 2, "BGS": 1 << 60, "STAR": 1 << 61}
SKY_TARGET_BIT = 1 << 32
ZWARN_SMALL_DELTA_CHI2 = 1 << 2
BAD_FIBERSTATUS_VALUES = (8, 16, 512)  # BROKENFIBER / BADTARGET-like COADD_FIBERSTATUS bits


def _flux_sigma_psf(depth_mag: np.ndarray) -> np.ndarray:
    """1-sigma PSF-flux error (nanomaggies) of a 5-sigma depth in AB mag."""
    return 10 ** ((22.5 - depth_mag) / 2.5) / 5.0


def catalogue_flux_noise(
    seed: int, brickid: np.ndarray, objid: np.ndarray, sigma_nmgy: np.ndarray
) -> np.ndarray:
    """The measurement error in each source's catalogue FLUX_G/R/Z, (N, 3) nanomaggies.

    Real sweep fluxes are Tractor fits to noisy images, so they scatter about the truth by
    their FLUX_IVAR. The draw is a deterministic function of (seed, BRICKID, OBJID, band), so
    the cutout renderer can subtract it again and render each source at its true flux.
    ``sigma_nmgy`` is (N, 3), i.e. 1 / sqrt(FLUX_IVAR).
    """
    key = source_key(brickid, objid)
    out = np.empty((key.size, 3))
    for b in range(3):
        u1 = hash_uniform(seed, key, salt=101 + 2 * b)
        u2 = hash_uniform(seed, key, salt=102 + 2 * b)
        # Box-Muller: two uniforms -> one standard normal per source and band.
        out[:, b] = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
    return out * np.asarray(sigma_nmgy)


def photometry_columns(
    seed: int,
    flux_nmgy: np.ndarray,
    fibre_fraction: np.ndarray,
    shape_r_arcsec: np.ndarray,
    ebv: np.ndarray,
    brickid: np.ndarray,
    objid: np.ndarray,
    photsys: str,
) -> dict[str, np.ndarray]:
    """FLUX/FLUX_IVAR/FIBERFLUX/MW_TRANSMISSION/PSFSIZE/PSFDEPTH/NOBS columns (g, r, z).

    ``flux_nmgy`` is the true flux; FLUX_* are measurements of it (truth plus
    :func:`catalogue_flux_noise`), FIBERFLUX_* are the true fibre fluxes.
    """
    cond = brick_conditions(seed, brickid, np.full(len(brickid), photsys.encode()))
    sigma = _flux_sigma_psf(cond.psfdepth_mag)  # (N, 3)
    # Extended sources are measured less precisely than point sources.
    ivar = 1.0 / (sigma**2 * (1.0 + (np.asarray(shape_r_arcsec)[:, None] / 0.5) ** 2))
    mw = mw_transmission(ebv, photsys)
    measured = flux_nmgy + catalogue_flux_noise(seed, brickid, objid, 1.0 / np.sqrt(ivar))
    cols: dict[str, np.ndarray] = {}
    for b, band in enumerate("GRZ"):
        cols[f"FLUX_{band}"] = measured[:, b]
        cols[f"FLUX_IVAR_{band}"] = ivar[:, b]
        cols[f"FIBERFLUX_{band}"] = flux_nmgy[:, b] * fibre_fraction
        cols[f"MW_TRANSMISSION_{band}"] = mw[:, b]
        cols[f"PSFSIZE_{band}"] = cond.psf_fwhm_arcsec[:, b]
        cols[f"PSFDEPTH_{band}"] = 1.0 / sigma[:, b] ** 2
        cols[f"NOBS_{band}"] = cond.nobs[:, b]
    return cols


def sweep_columns(seed: int, sources: Sources, photsys: str) -> dict[str, np.ndarray]:
    """Every SWEEP_COLUMNS column for ``sources``."""
    phot = photometry_columns(
        seed,
        sources.flux_nmgy,
        sources.fibre_fraction,
        sources.shape_r_arcsec,
        sources.ebv,
        sources.brickid,
        sources.objid,
        photsys,
    )
    return {
        "RELEASE": sources.ls_release,
        "BRICKID": sources.brickid,
        "BRICKNAME": sources.brickname,
        "OBJID": sources.objid,
        "TYPE": sources.morphtype,
        "RA": sources.ra_deg,
        "DEC": sources.dec_deg,
        "EBV": sources.ebv,
        **{k: v for k, v in phot.items() if not k.startswith(("FIBER",))},
        **{f"FIBERFLUX_{b}": phot[f"FIBERFLUX_{b}"] for b in "GRZ"},
        "MASKBITS": np.zeros(len(sources), dtype=np.int16),
        "SHAPE_R": sources.shape_r_arcsec,
        "SHAPE_E1": sources.e1,
        "SHAPE_E2": sources.e2,
        "SERSIC": sources.sersic_n,
    }


@dataclass(frozen=True)
class ObservationRows:
    """Spectra of one release in one pixel: target index, survey, program, exposure, flags."""

    target: np.ndarray
    survey: np.ndarray
    program: np.ndarray
    exptime_s: np.ndarray
    zcat_primary: np.ndarray
    sv_primary: np.ndarray
    zcat_nspec: np.ndarray
    sv_nspec: np.ndarray
    coadd_pixel: np.ndarray


def _program(targets: Targets) -> np.ndarray:
    bright = np.isin(targets.tracer, ["BGS", "STAR"]) | (
        (targets.kind == "sky") & (targets.u_survey < 0.5)
    )
    return np.where(bright, "bright", "dark")


def _base_survey(
    cfg: SampleSkyConfig, fp: ReleaseFootprint, targets: Targets, pixel: int
) -> np.ndarray:
    """The survey each target is observed in by ``fp``, inherited from earlier releases."""
    survey = np.where(targets.u_survey < 0.7, fp.surveys[0], fp.surveys[1]).astype("<U8")
    for earlier in cfg.releases:
        if earlier.name == fp.name:
            break
        if pixel in earlier.pixels:
            seen = targets.rank < earlier.target_fraction
            survey[seen] = np.where(targets.u_survey < 0.7, earlier.surveys[0], earlier.surveys[1])[
                seen
            ]
    return survey


def observation_rows(
    cfg: SampleSkyConfig, fp: ReleaseFootprint, targets: Targets, pixel: int
) -> ObservationRows:
    """Which spectra release ``fp`` holds for the targets of ``pixel``."""
    observed = np.flatnonzero(targets.rank < fp.target_fraction)
    base = _base_survey(cfg, fp, targets, pixel)[observed]
    program = _program(targets)[observed]
    rep = observed[targets.is_repeat[observed]]
    second = np.array(
        [next(s for s in fp.surveys if s != b) for b in base[targets.is_repeat[observed]]],
        dtype="<U8",
    )
    target = np.r_[observed, rep]
    survey = np.r_[base, second]
    prog = np.r_[program, _program(targets)[rep]]
    rng = pixel_rng(cfg.seed, pixel, STREAM_ROWS + [r.name for r in cfg.releases].index(fp.name))
    bright = prog == "bright"
    exptime = np.where(
        bright, rng.uniform(180, 420, target.size), rng.uniform(800, 1400, target.size)
    )
    order = np.lexsort((-exptime, target))
    first = np.r_[True, target[order][1:] != target[order][:-1]]
    zcat_primary = np.empty(target.size, dtype=bool)
    zcat_primary[order] = first
    is_sv = np.char.startswith(survey, "sv")
    sv_order = np.lexsort((-exptime, ~is_sv, target))
    sv_first = np.r_[True, target[sv_order][1:] != target[sv_order][:-1]] & is_sv[sv_order]
    sv_primary = np.empty(target.size, dtype=bool)
    sv_primary[sv_order] = sv_first
    counts = np.bincount(target, minlength=len(targets))
    sv_counts = np.bincount(target[is_sv], minlength=len(targets))
    return ObservationRows(
        target=target,
        survey=survey,
        program=prog,
        exptime_s=exptime,
        zcat_primary=zcat_primary,
        sv_primary=sv_primary,
        zcat_nspec=counts[target],
        sv_nspec=sv_counts[target],
        coadd_pixel=pixels_of(targets.ra_deg[target], targets.dec_deg[target], DESI_NSIDE),
    )


def redshift_columns(
    rng: np.random.Generator, targets: Targets, idx: np.ndarray
) -> dict[str, np.ndarray]:
    """Redrock-like fit results (REDSHIFTS columns) for targets ``idx``, traps included."""
    kind = targets.kind[idx]
    z_true = targets.z[idx]
    n = idx.size
    zerr = np.where(kind == "qso", 3e-4, 2e-5) * (1 + z_true) * rng.uniform(1, 3, n)
    z = z_true + rng.normal(0, 1, n) * zerr
    z = np.where(kind == "star", rng.normal(0, 1e-4, n), z)
    z = np.where(kind == "zwarn", rng.uniform(0.0, 1.5, n), z)
    z = np.where(kind == "sky", rng.uniform(0.0, 1.0, n), z)
    dchi2 = 10 ** rng.uniform(1.8, 4.0, n)
    dchi2 = np.where(kind == "low_deltachi2", rng.uniform(2, 24, n), dchi2)
    dchi2 = np.where(kind == "zwarn", rng.uniform(0.5, 9, n), dchi2)
    spectype = np.select([kind == "star", kind == "qso"], ["STAR", "QSO"], "GALAXY")
    temp = targets.temperature_k[idx]
    subtype = np.where(
        kind == "star",
        np.select([temp > 7300, temp > 6000, temp > 5200, temp > 3900], ["A", "F", "G", "K"], "M"),
        "",
    )
    npix = rng.integers(7850, 7930, n)
    coeff = np.zeros((n, 10))
    coeff[:, :5] = targets.coeffs[idx] / np.maximum(
        targets.coeffs[idx].sum(axis=1, keepdims=True), 1e-30
    )
    return {
        "TARGETID": targets.targetid[idx],
        "Z": z,
        "ZERR": zerr,
        "ZWARN": np.where(kind == "zwarn", ZWARN_SMALL_DELTA_CHI2, 0),
        "CHI2": npix * rng.uniform(0.95, 1.15, n),
        "COEFF": coeff,
        "NPIXELS": npix,
        "SPECTYPE": spectype,
        "SUBTYPE": subtype,
        "NCOEFF": np.where(kind == "star", 5, np.where(kind == "qso", 4, 10)),
        "DELTACHI2": dchi2,
    }


def fibermap_columns(
    seed: int, targets: Targets, rows: ObservationRows, sel: np.ndarray, fiberstatus: np.ndarray
) -> dict[str, np.ndarray]:
    """FIBERMAP columns for rows ``sel`` (indices into ``rows``)."""
    idx = rows.target[sel]
    kind = targets.kind[idx]
    phot = photometry_columns(
        seed,
        targets.flux_nmgy[idx],
        targets.fibre_fraction[idx],
        targets.shape_r_arcsec[idx],
        targets.ebv[idx],
        targets.brickid[idx],
        targets.objid[idx],
        targets.photsys,
    )
    desi_target = np.array(
        [DESI_TARGET_BITS.get(t, 0) for t in targets.tracer[idx]], dtype=np.int64
    )
    desi_target = np.where(kind == "sky", SKY_TARGET_BIT, desi_target)
    return {
        "TARGETID": targets.targetid[idx],
        "COADD_FIBERSTATUS": fiberstatus,
        "TARGET_RA": targets.ra_deg[idx],
        "TARGET_DEC": targets.dec_deg[idx],
        "OBJTYPE": np.where(kind == "sky", "SKY", "TGT"),
        "RELEASE": targets.ls_release[idx],
        "BRICKNAME": targets.brickname[idx],
        "BRICKID": targets.brickid[idx],
        "BRICK_OBJID": targets.objid[idx],
        "MORPHTYPE": targets.morphtype[idx],
        "EBV": targets.ebv[idx],
        **{f"FLUX_{b}": phot[f"FLUX_{b}"] for b in "GRZ"},
        **{f"FLUX_IVAR_{b}": phot[f"FLUX_IVAR_{b}"] for b in "GRZ"},
        **{f"FIBERFLUX_{b}": phot[f"FIBERFLUX_{b}"] for b in "GRZ"},
        **{f"FIBERTOTFLUX_{b}": phot[f"FIBERFLUX_{b}"] for b in "GRZ"},
        "MASKBITS": np.zeros(idx.size, dtype=np.int16),
        "SERSIC": targets.sersic_n[idx],
        "SHAPE_R": targets.shape_r_arcsec[idx],
        "SHAPE_E1": targets.e1[idx],
        "SHAPE_E2": targets.e2[idx],
        "PHOTSYS": np.where(kind == "sky", "", targets.photsys),
        "DESI_TARGET": desi_target,
        "COADD_NUMEXP": np.maximum(1, np.round(rows.exptime_s[sel] / 300)).astype(np.int16),
        "COADD_EXPTIME": rows.exptime_s[sel],
    }


def fiberstatus_of(rng: np.random.Generator, targets: Targets, idx: np.ndarray) -> np.ndarray:
    """COADD_FIBERSTATUS: 0 except the bad-fibre trap rows."""
    bad = targets.kind[idx] == "bad_fiberstatus"
    return np.where(bad, rng.choice(BAD_FIBERSTATUS_VALUES, idx.size), 0).astype(np.int32)
