"""Build one pixel of the sample sky (imaging sources + target pool) from (seed, pixel)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astroclip_core.samplesky.config import SampleSkyConfig
from astroclip_core.samplesky.ids import (
    RELEASE_NORTH,
    RELEASE_SOUTH,
    Bricks,
    bricks_of,
    ebv_at,
    encode_targetid,
    sky_targetid,
)
from astroclip_core.samplesky.photometry import mw_transmission
from astroclip_core.samplesky.pointsources import PointSources, draw_qsos, draw_stars
from astroclip_core.samplesky.population import Galaxies, draw_galaxies
from astroclip_core.samplesky.render import fibre_fraction
from astroclip_core.samplesky.sky import (
    DECOY_GALAXY_KINDS,
    OBJID_PIXEL_STRIDE,
    STRUCTURE_FIELDS,
    PixelSky,
    Sources,
    Targets,
    border_points,
    offset,
    pixel_rng,
    uniform_positions,
)
from astroclip_core.sky.healpix import PARTITION_NSIDE, HealpixPixel
from astroclip_core.sources.layout import photsys_of_dec

SKY_OBJID_OFFSET = 60000  # sky fibres take objids no imaging source uses
# Random streams of a pixel (never renumber: the sky's bytes depend on them).
STREAM_TARGETS, STREAM_DECOYS, STREAM_POINT, STREAM_FAINT, STREAM_STARS = 1, 2, 3, 4, 5
STREAM_POSITIONS, STREAM_TRAPS, STREAM_SURVEY, STREAM_MORPH = 6, 7, 8, 9


def _concat_galaxies(parts: list[Galaxies]) -> Galaxies:
    return Galaxies(
        **{f: np.concatenate([getattr(p, f) for p in parts]) for f in Galaxies.__dataclass_fields__}
    )


def _morphology(rng: np.random.Generator, gal: Galaxies) -> tuple[np.ndarray, ...]:
    """Tractor TYPE, SERSIC, SHAPE_R, E1, E2 of galaxies: tiny ones are PSF, small blue REX."""
    n = len(gal)
    u = rng.uniform(size=n)
    ser_n = np.where(gal.is_red, rng.choice([3.0, 5.0], n), rng.choice([1.5, 2.5], n))
    mtype = np.where(gal.is_red, "DEV", "EXP").astype("<U3")
    mtype[u < 0.15] = "SER"
    mtype[~gal.is_red & (gal.shape_r_arcsec < 0.6) & (u >= 0.15)] = "REX"
    mtype[gal.shape_r_arcsec < 0.12] = "PSF"
    sersic = np.select(
        [mtype == "PSF", mtype == "DEV", mtype == "SER"], [0.0, 4.0, ser_n], default=1.0
    )
    round_ = (mtype == "PSF") | (mtype == "REX")
    radius = np.where(mtype == "PSF", 0.0, gal.shape_r_arcsec)
    return mtype, sersic, radius, np.where(round_, 0.0, gal.e1), np.where(round_, 0.0, gal.e2)


def _point_morphology(n: int) -> tuple[np.ndarray, ...]:
    return (np.full(n, "PSF"), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n))


@dataclass(frozen=True)
class PixelObjects:
    """Everything drawn for one pixel before positions: targets first, then imaging-only."""

    galaxies: Galaxies
    decoy_counts: tuple[int, ...]  # per DECOY_GALAXY_KINDS
    decoys: Galaxies
    stars: PointSources
    qsos: PointSources
    faint: Galaxies
    field_stars: PointSources
    n_sky: int


def _draw_objects(cfg: SampleSkyConfig, pixel: int, photsys: str) -> PixelObjects:
    n_gal = cfg.galaxies_per_pixel
    rates = cfg.decoys
    n_decoy = tuple(int(round(getattr(rates, k) * n_gal)) for k in DECOY_GALAXY_KINDS)
    return PixelObjects(
        galaxies=draw_galaxies(pixel_rng(cfg.seed, pixel, STREAM_TARGETS), n_gal, photsys=photsys),
        decoy_counts=n_decoy,
        decoys=draw_galaxies(
            pixel_rng(cfg.seed, pixel, STREAM_DECOYS), sum(n_decoy), photsys=photsys
        ),
        stars=draw_stars(
            pixel_rng(cfg.seed, pixel, STREAM_POINT),
            int(round(rates.star * n_gal)),
            (16.0, 19.5),
            photsys,
        ),
        qsos=draw_qsos(
            pixel_rng(cfg.seed, pixel, STREAM_POINT + 100), int(round(rates.qso * n_gal)), photsys
        ),
        faint=draw_galaxies(
            pixel_rng(cfg.seed, pixel, STREAM_FAINT),
            int(round(cfg.imaging_galaxies_per_target * n_gal)),
            faint=True,
            photsys=photsys,
        ),
        field_stars=draw_stars(
            pixel_rng(cfg.seed, pixel, STREAM_STARS),
            int(round(cfg.imaging_stars_per_target * n_gal)),
            (16.0, 22.5),
            photsys,
        ),
        n_sky=int(round(rates.sky * n_gal)),
    )


def build_pixel_sky(cfg: SampleSkyConfig, pixel: int) -> PixelSky:
    """Draw the imaging sources and the target pool of one nside-16 pixel."""
    photsys = photsys_of_dec(HealpixPixel(PARTITION_NSIDE, pixel).center_deg()[1])
    obj = _draw_objects(cfg, pixel, photsys)
    gal, decoys, faint = obj.galaxies, obj.decoys, obj.faint
    stars, qsos, field = obj.stars, obj.qsos, obj.field_stars
    n_gal, n_dec, n_star, n_qso = len(gal), len(decoys), len(stars), len(qsos)
    n_sky = obj.n_sky
    n_src_targets = n_gal + n_dec + n_star + n_qso
    all_gal = _concat_galaxies([gal, decoys, faint])
    g_morph = _morphology(pixel_rng(cfg.seed, pixel, STREAM_MORPH), all_gal)
    p_morph = _point_morphology(n_star + n_qso + len(field))

    # Source order: target galaxies, decoy galaxies, stars, quasars, faint galaxies, field stars.
    gal_slice = np.r_[np.arange(n_gal + n_dec), n_src_targets + np.arange(len(faint))]
    n_sources = n_src_targets + len(faint) + len(field)
    point_slice = np.r_[
        n_gal + n_dec + np.arange(n_star + n_qso),
        n_src_targets + len(faint) + np.arange(len(field)),
    ]
    mtype = np.empty(n_sources, dtype="<U3")
    cols = {k: np.zeros(n_sources) for k in ("sersic", "radius", "e1", "e2")}
    mtype[gal_slice], mtype[point_slice] = g_morph[0], p_morph[0]
    for k, idx in zip(("sersic", "radius", "e1", "e2"), range(1, 5), strict=True):
        cols[k][gal_slice], cols[k][point_slice] = g_morph[idx], p_morph[idx]
    flux = np.zeros((n_sources, 3))
    flux[gal_slice] = all_gal.flux_nmgy
    # Bulges of extended galaxies (a PSF-type galaxy is too small to show one).
    bulge_flux, bulge_r = np.zeros((n_sources, 3)), np.zeros(n_sources)
    has_bulge = g_morph[0] != "PSF"
    bulge_flux[gal_slice[has_bulge]] = all_gal.bulge_flux_nmgy[has_bulge]
    bulge_r[gal_slice[has_bulge]] = all_gal.bulge_r_arcsec[has_bulge]
    # Their disc structure (clumps, arms, bars), carried like the bulges.
    structure = {k: np.zeros((n_sources, *getattr(all_gal, k).shape[1:])) for k in STRUCTURE_FIELDS}
    for k, arr in structure.items():
        arr[gal_slice[has_bulge]] = getattr(all_gal, k)[has_bulge]
    flux[point_slice] = np.r_[stars.flux_nmgy, qsos.flux_nmgy, field.flux_nmgy]

    # Positions: targets uniform, then the traps, then sources jittered 0.1-0.3" from targets.
    pos_rng = pixel_rng(cfg.seed, pixel, STREAM_POSITIONS)
    t_ra, t_dec = uniform_positions(pos_rng, pixel, n_src_targets + n_sky)
    s_ra, s_dec = np.empty(n_sources), np.empty(n_sources)
    s_ra[n_src_targets:], s_dec[n_src_targets:] = uniform_positions(
        pos_rng, pixel, n_sources - n_src_targets
    )
    jitter = pos_rng.uniform(0.1, 0.3, n_src_targets)
    angle = pos_rng.uniform(0, 2 * np.pi, n_src_targets)

    trap_rng = pixel_rng(cfg.seed, pixel, STREAM_TRAPS)
    order = trap_rng.permutation(n_gal)
    n_border = int(round(cfg.border_fraction * n_gal))
    n_none = int(round(cfg.no_imaging_fraction * n_gal))
    n_pair = min(int(round(cfg.close_pair_fraction * n_gal)), len(faint))
    border, no_image = order[:n_border], order[n_border : n_border + n_none]
    paired = order[n_border + n_none : n_border + n_none + n_pair]
    b_ra, b_dec, b_angle = border_points(trap_rng, pixel, n_border)
    t_ra[border], t_dec[border] = offset(b_ra, b_dec, np.full(n_border, 0.05), b_angle + np.pi)
    angle[border] = b_angle
    jitter[border] = trap_rng.uniform(0.22, 0.3, n_border)
    s_ra[:n_src_targets], s_dec[:n_src_targets] = offset(
        t_ra[:n_src_targets], t_dec[:n_src_targets], jitter, angle
    )
    companions = n_src_targets + np.arange(n_pair)  # the first faint galaxies
    s_ra[companions], s_dec[companions] = offset(
        s_ra[paired],
        s_dec[paired],
        trap_rng.uniform(1.2, 2.0, n_pair),
        trap_rng.uniform(0, 2 * np.pi, n_pair),
    )

    bricks = bricks_of(s_ra, s_dec)
    objid = (np.arange(n_sources) + OBJID_PIXEL_STRIDE * (pixel % 64)).astype(np.int32)
    ls_release = np.full(
        n_sources, RELEASE_NORTH if photsys == "N" else RELEASE_SOUTH, dtype=np.int16
    )
    ebv = ebv_at(s_ra, s_dec)
    mw = mw_transmission(ebv, photsys)
    flux_obs = flux * mw
    # The fibre sees the circularised profile: SHAPE_R is the major axis (Tractor), sqrt(q) it.
    ell = np.hypot(cols["e1"], cols["e2"])
    fibre = fibre_fraction(mtype, cols["sersic"], cols["radius"] * np.sqrt((1 - ell) / (1 + ell)))
    keep = np.ones(n_sources, dtype=bool)
    keep[no_image] = False
    sources = Sources(
        ra_deg=s_ra[keep],
        dec_deg=s_dec[keep],
        morphtype=mtype[keep],
        sersic_n=cols["sersic"][keep],
        shape_r_arcsec=cols["radius"][keep],
        e1=cols["e1"][keep],
        e2=cols["e2"][keep],
        flux_nmgy=flux_obs[keep],
        ls_release=ls_release[keep],
        brickid=bricks.brickid[keep],
        brickname=bricks.brickname[keep],
        objid=objid[keep],
        ebv=ebv[keep],
        fibre_fraction=fibre[keep],
        bulge_flux_nmgy=(bulge_flux * mw)[keep],
        bulge_r_arcsec=bulge_r[keep],
        **{k: (v * mw if k == "knot_flux_nmgy" else v)[keep] for k, v in structure.items()},
    )
    new_index = np.cumsum(keep) - 1
    targets = _targets(
        cfg,
        pixel,
        photsys,
        obj,
        all_gal,
        t_ra,
        t_dec,
        np.where(keep[:n_src_targets], new_index[:n_src_targets], -1),
        bricks,
        objid,
        ls_release,
        ebv,
        flux_obs,
        n_sky,
        fibre[:n_src_targets],
        (
            mtype[:n_src_targets],
            *(cols[k][:n_src_targets] for k in ("sersic", "radius", "e1", "e2")),
        ),
    )
    return PixelSky(pixel=pixel, sources=sources, targets=targets)


def _targets(
    cfg: SampleSkyConfig,
    pixel: int,
    photsys: str,
    obj: PixelObjects,
    all_gal: Galaxies,
    t_ra: np.ndarray,
    t_dec: np.ndarray,
    source: np.ndarray,
    bricks: Bricks,
    objid: np.ndarray,
    ls_release: np.ndarray,
    ebv: np.ndarray,
    flux_obs: np.ndarray,
    n_sky: int,
    fibre: np.ndarray,
    morph: tuple[np.ndarray, ...],
) -> Targets:
    """The target pool: the first sources plus sky fibres, with their SED parameters."""
    stars, qsos = obj.stars, obj.qsos
    n_dec_each = obj.decoy_counts
    n_gal = cfg.galaxies_per_pixel
    n_g = n_gal + sum(n_dec_each)
    n_src = n_g + len(stars) + len(qsos)
    n = n_src + n_sky
    kind = np.concatenate(
        [
            np.full(n_gal, "galaxy"),
            *[np.full(c, k) for k, c in zip(DECOY_GALAXY_KINDS, n_dec_each, strict=True)],
            np.full(len(stars), "star"),
            np.full(len(qsos), "qso"),
            np.full(n_sky, "sky"),
        ]
    ).astype("<U16")
    pad = np.zeros(n - n_g)
    sky_bricks = bricks_of(t_ra[n_src:], t_dec[n_src:])
    sky_objid = (SKY_OBJID_OFFSET + np.arange(n_sky) + OBJID_PIXEL_STRIDE * (pixel % 64)).astype(
        np.int32
    )
    brickid = np.r_[bricks.brickid[:n_src], sky_bricks.brickid]
    brickname = np.r_[bricks.brickname[:n_src], sky_bricks.brickname]
    t_objid = np.r_[objid[:n_src], sky_objid]
    t_release = np.r_[ls_release[:n_src], np.zeros(n_sky, dtype=np.int16)]
    targetid = np.r_[
        encode_targetid(ls_release[:n_src], brickid[:n_src], objid[:n_src]),
        sky_targetid(sky_bricks.brickid, sky_objid),
    ]
    srng = pixel_rng(cfg.seed, pixel, STREAM_SURVEY)
    return Targets(
        kind=kind,
        rank=srng.uniform(size=n),
        u_survey=srng.uniform(size=n),
        is_repeat=(srng.uniform(size=n) < cfg.decoys.repeat) & (kind == "galaxy"),
        targetid=targetid,
        ra_deg=t_ra,
        dec_deg=t_dec,
        source=np.r_[source, np.full(n_sky, -1)],
        ls_release=t_release,
        brickid=brickid,
        brickname=brickname,
        objid=t_objid,
        tracer=np.r_[
            all_gal.tracer[:n_g], np.where(np.arange(n - n_g) < len(stars), "STAR", "QSO")
        ],
        z=np.r_[all_gal.z[:n_g], stars.z, qsos.z, np.zeros(n_sky)],
        coeffs=np.r_[all_gal.coeffs[:n_g], np.zeros((n - n_g, 5))],
        sigma_kms=np.r_[all_gal.sigma_kms[:n_g], pad],
        is_red=np.r_[all_gal.is_red[:n_g], np.zeros(n - n_g, dtype=bool)],
        log_mstar=np.r_[all_gal.log_mstar[:n_g], pad + np.nan],
        metallicity=np.r_[all_gal.metallicity[:n_g], pad + np.nan],
        log_ssfr=np.r_[all_gal.log_ssfr[:n_g], pad + np.nan],
        temperature_k=np.r_[
            np.zeros(n_g), stars.temperature_k, qsos.temperature_k, np.zeros(n_sky)
        ],
        sed_scale=np.r_[np.zeros(n_g), stars.scale, qsos.scale, np.zeros(n_sky)],
        ebv=np.r_[ebv[:n_src], ebv_at(t_ra[n_src:], t_dec[n_src:])],
        flux_nmgy=np.r_[flux_obs[:n_src], np.zeros((n_sky, 3))],
        fibre_fraction=np.r_[fibre, np.zeros(n_sky)],
        morphtype=np.r_[morph[0], np.full(n_sky, "")],
        sersic_n=np.r_[morph[1], np.zeros(n_sky)],
        shape_r_arcsec=np.r_[morph[2], np.zeros(n_sky)],
        e1=np.r_[morph[3], np.zeros(n_sky)],
        e2=np.r_[morph[4], np.zeros(n_sky)],
        photsys=photsys,
        line_flux=np.r_[all_gal.line_flux[:n_g], np.zeros((n - n_g, all_gal.line_flux.shape[1]))],
    )
