"""The sample sky's DR9 coadd bricks: any window of any brick, drawn from the seed.

A brick's pixels are a deterministic function of (sky seed, brick, band, x, y), so a window
equals the same slice of the whole brick exactly, and the cutout service (which computes only
the windows a stamp needs) agrees bit for bit with a client that downloads whole bricks:

- **Sources:** every sweep source (disc, plus its bulge where it has one) is drawn by GalSim
  on a square stamp of its own, 2h+1 pixels with h = ceil((TRUNCATION_RADII * r + 6") /
  0.262"), centred on the brick pixel nearest to it, with the brick's PSF. The stamp depends
  only on the source and the brick, never on the window; a window adds the part of each stamp
  it overlaps, in sweep-row order (disc before bulge), in float32. A star-forming disc's
  clumps and arm knots (seeded from (seed, BRICKID, OBJID)) are drawn on the same stamp.
- **Field:** then the faint stars and galaxies of :mod:`astroclip_core.samplesky.field` (not in
  the sweep), the same way, in (BRICKID, cell, source) order.
- **Noise:** per fixed 50x50 tile of the brick, seeded from (seed, BRICKID, band, tile), with
  the pixel sigma that gives the brick's PSFDEPTH for its PSF (sigma_psf / sqrt(noise area)).
- **Footprint:** a pixel whose centre lies outside the sky's nside-16 pixels is exactly 0.
- **Quantised:** values are rounded to multiples of :data:`QUANTUM_NMGY` (2**-12 nanomaggies),
  so the Rice-compressed ``.fits.fz`` file holds exactly these floats.

A brick is *in the survey* (listed in ``<region>/survey-bricks-dr9-<region>.fits.gz``) when its
bounds meet the bounding box of a footprint pixel; other bricks have no data (the server
answers 404, a stamp gets zeros there).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import galsim
import numpy as np
from scipy.signal import fftconvolve

from astroclip_core.formats.legacysurvey_bricks import (
    brick_image_header,
    write_brick_image,
    write_region_bricks,
    write_survey_bricks,
)
from astroclip_core.samplesky.field import (
    CELLS_PER_SIDE,
    cell_of,
    field_cell,
    max_galaxy_radius_arcsec,
)
from astroclip_core.samplesky.generate import legacysurvey_root
from astroclip_core.samplesky.ids import brick_conditions, brick_table, ebv_at
from astroclip_core.samplesky.render import (
    GSPARAMS,
    TRUNCATION_RADII,
    Blobs,
    DiscStructure,
    draw_blobs,
    galaxy_profile,
    psf_noise_area_pix,
    psf_profile,
    sersic_index,
    structured_disc,
)
from astroclip_core.sky.bricks import (
    BRICK_CRPIX,
    BRICK_PIXSCALE_ARCSEC,
    BRICK_SIZE_PIX,
    BrickIndex,
    BrickWindow,
    brick_pixel_of,
)
from astroclip_core.sky.healpix import PARTITION_NSIDE, HealpixPixel, pixels_of
from astroclip_core.sky.tan import tan_pixel_to_sky
from astroclip_core.sources import layout

if TYPE_CHECKING:
    from astroclip_core.samplesky.cutouts import CutoutRenderer

TILE_PIX = 50  # noise and coverage tiles: a 158-pixel window draws (158 + 50)^2 normals a band
QUANTUM_NMGY = 2.0**-12
PSF_MARGIN_ARCSEC = 6.0
BAND_INDEX = {"g": 0, "r": 1, "z": 2}
COVERAGE_TILES_KEPT = 4096


class BrickSky:
    """Windows and files of the sample sky's bricks; thread-safe (the server is threaded)."""

    def __init__(self, renderer: CutoutRenderer) -> None:
        self.renderer = renderer
        self.seed = renderer.seed
        self.footprint = np.asarray(renderer.footprint)
        self._coverage: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self._whole: dict[int, bool | None] = {}
        self._lock = threading.Lock()

    @cached_property
    def columns(self) -> dict[str, np.ndarray]:
        """``survey-bricks`` columns of every brick of the grid."""
        return brick_table()

    @cached_property
    def index(self) -> BrickIndex:
        """The brick index the service uses: the rows of ``survey-bricks.fits.gz``."""
        c = self.columns
        return BrickIndex(
            c["BRICKNAME"], c["RA"], c["DEC"], c["RA1"], c["RA2"], c["DEC1"], c["DEC2"]
        )

    @cached_property
    def rows_with_data(self) -> frozenset[int]:
        """Index rows of the bricks in the survey: those with footprint pixels.

        Candidates meet a footprint pixel's bounding box; a candidate is kept when any point
        of a 19x19 grid over it (every 200 pixels, edges included) lies in the footprint.
        """
        c = self.columns
        candidates: set[int] = set()
        for pixel in self.footprint:
            for ra0, ra1, dec0, dec1 in HealpixPixel(
                PARTITION_NSIDE, int(pixel)
            ).bounding_boxes_deg():
                hit = (c["RA1"] < ra1) & (c["RA2"] > ra0) & (c["DEC1"] < dec1) & (c["DEC2"] > dec0)
                candidates.update(int(r) for r in np.flatnonzero(hit))
        rows = np.array(sorted(candidates), dtype=np.int64)
        grid = np.linspace(1.0, BRICK_SIZE_PIX, 19)
        gx, gy = (a.ravel() for a in np.meshgrid(grid, grid))  # (361,) FITS coordinates
        ra, dec = tan_pixel_to_sky(
            np.tile(gx, rows.size), np.tile(gy, rows.size), np.repeat(c["RA"][rows], gx.size),
            np.repeat(c["DEC"][rows], gx.size), BRICK_CRPIX, BRICK_CRPIX, BRICK_PIXSCALE_ARCSEC,
        )  # fmt: skip
        inside = np.isin(pixels_of(ra, dec), self.footprint).reshape(rows.size, gx.size)
        return frozenset(int(r) for r in rows[inside.any(axis=1)])

    def region(self, row: int) -> str:
        """'north' or 'south': the region brick ``row`` belongs to."""
        return layout.region_of_dec(float(self.columns["DEC"][row]))

    def _conditions(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(PSF FWHM arcsec (3,), per-pixel noise sigma nanomaggies (3,)) of brick ``row``."""
        photsys = b"N" if self.region(row) == "north" else b"S"
        cond = brick_conditions(
            self.seed, np.array([self.columns["BRICKID"][row]]), np.array([photsys])
        )
        fwhm, depth = cond.psf_fwhm_arcsec[0], cond.psfdepth_mag[0]
        sigma_psf = 10 ** ((22.5 - depth) / 2.5) / 5.0
        # PSF flux error = pixel sigma * sqrt(noise-equivalent area of the rendered PSF).
        return fwhm, sigma_psf / np.sqrt(psf_noise_area_pix(fwhm, BRICK_PIXSCALE_ARCSEC))

    def window(
        self, row: int, win: BrickWindow, bands: str = "grz", noise: bool = True
    ) -> np.ndarray | None:
        """(len(bands), rows, cols) float32 pixels of brick ``row`` in ``win``; None: no data."""
        if row not in self.rows_with_data:
            return None
        fwhm, sigma = self._conditions(row)
        out = np.zeros((len(bands), *win.shape), dtype=np.float32)
        psfs = [psf_profile(float(fwhm[BAND_INDEX[b]])) for b in bands]
        self._add_sources(out, row, win, bands, psfs)
        self._add_field(out, row, win, bands, psfs)
        if noise:
            self._add_noise(out, row, win, bands, sigma)
        out *= self._covered(row, win)
        # Scaling by a power of two is exact in float32, so this rounds to the quantum exactly.
        quantum = np.float32(QUANTUM_NMGY)
        return np.round(out / quantum) * quantum

    def _add_sources(
        self, out: np.ndarray, row: int, win: BrickWindow, bands: str, psfs: list[galsim.GSObject]
    ) -> None:
        """Add every sweep source's stamp overlapping ``win`` (module docstring) to ``out``."""
        cat = self.renderer.catalog()
        cy, cx = (win.y0 + win.y1 - 1) / 2.0 + 1, (win.x0 + win.x1 - 1) / 2.0 + 1
        c = self.columns
        ra_c, dec_c = tan_pixel_to_sky(
            np.array([cx]),
            np.array([cy]),
            c["RA"][row],
            c["DEC"][row],
            BRICK_CRPIX,
            BRICK_CRPIX,
            BRICK_PIXSCALE_ARCSEC,
        )
        reach = self._max_reach_arcsec + np.hypot(*win.shape) / 2 * BRICK_PIXSCALE_ARCSEC + 1.0
        near = self.renderer.sources_near(float(ra_c[0]), float(dec_c[0]), reach)
        if near.size == 0:
            return
        band_idx = [BAND_INDEX[b] for b in bands]
        flux = self.renderer.true_flux(near)[:, band_idx]
        bulge_flux = cat["bulge_flux"][near][:, band_idx]
        knot_flux = cat["knot_flux"][near][:, band_idx]
        u, v = brick_pixel_of(self.index, row, cat["ra"][near], cat["dec"][near])
        for k, src in enumerate(near):
            r = float(cat["shape_r"][src])
            if _overlap(win, u[k], v[k], stamp_half_pix(r)) is not None:
                profiles, blobs = self._disc_profiles(src, flux[k] - bulge_flux[k], knot_flux[k])
                _add_stamp(out, win, u[k], v[k], profiles, r, psfs, blobs)
            bulge_r = float(cat["bulge_r"][src])
            if bulge_r > 0 and _overlap(win, u[k], v[k], stamp_half_pix(bulge_r)) is not None:
                bulge = galaxy_profile("DEV", 4.0, bulge_r, 0.0, 0.0)
                _add_stamp(out, win, u[k], v[k], [bulge.withFlux(float(f)) for f in bulge_flux[k]],
                           bulge_r, psfs)  # fmt: skip

    def _disc_profiles(
        self, src: int, nonbulge_flux: np.ndarray, knot_flux: np.ndarray
    ) -> tuple[list[galsim.GSObject | None], Blobs | None]:
        """Per band, the unconvolved profile of sweep source ``src`` less its bulge (the
        catalogue's smooth profile, or the disc with its bar), and its clumps and arm knots.

        ``nonbulge_flux`` (nbands,): the source's flux less the bulge's, clumps included.
        """
        cat = self.renderer.catalog()
        morph, r = str(cat["type"][src]), float(cat["shape_r"][src])
        e1, e2 = float(cat["shape_e1"][src]), float(cat["shape_e2"][src])
        structure = DiscStructure(
            n_knots=int(cat["n_knots"][src]),
            arm_flux_frac=float(cat["arm_flux_frac"][src]),
            n_arms=int(cat["n_arms"][src]),
            arm_pitch_deg=float(cat["arm_pitch_deg"][src]),
            bar_flux_frac=float(cat["bar_flux_frac"][src]),
            bar_r_frac=float(cat["bar_r_frac"][src]),
            bar_axis_ratio=float(cat["bar_axis_ratio"][src]),
            bar_angle_rad=float(cat["bar_angle_rad"][src]),
            seed=_source_seed(self.seed, int(cat["brickid"][src]), int(cat["objid"][src])),
        )
        if morph == "PSF" or r <= 0 or structure.is_smooth:
            profile = galaxy_profile(morph, float(cat["sersic"][src]), r, e1, e2)
            return [profile.withFlux(float(f)) for f in nonbulge_flux], None
        if morph == "REX":
            e1 = e2 = 0.0
        n = sersic_index(morph, float(cat["sersic"][src]))
        return structured_disc(n, r, e1, e2, nonbulge_flux - knot_flux, knot_flux, structure)

    def _add_field(
        self,
        out: np.ndarray,
        row: int,
        win: BrickWindow,
        bands: str,
        psfs: list[galsim.GSObject],
    ) -> None:
        """Add the faint field (:mod:`astroclip_core.samplesky.field`) reaching ``win``.

        Cells are found by sampling the window, grown by the farthest field stamp, every
        ``step`` pixels (less than a cell's side), and added in (BRICKID, cell) order.
        """
        c = self.columns
        photsys = "N" if self.region(row) == "north" else "S"
        reach = stamp_half_pix(max_galaxy_radius_arcsec(self.seed, photsys)) + 2
        step = BRICK_SIZE_PIX // CELLS_PER_SIDE // 3
        xs = np.arange(win.x0 - reach, win.x1 + reach + step, step, dtype=np.float64)
        ys = np.arange(win.y0 - reach, win.y1 + reach + step, step, dtype=np.float64)
        gx, gy = (a.ravel() for a in np.meshgrid(xs, ys))
        ra, dec = tan_pixel_to_sky(
            gx + 1, gy + 1, c["RA"][row], c["DEC"][row], BRICK_CRPIX, BRICK_CRPIX,
            BRICK_PIXSCALE_ARCSEC,
        )  # fmt: skip
        owners = self.index.owners(ra, dec)
        keys: set[tuple[int, int, int, int]] = set()
        for owner in np.unique(owners[owners >= 0]):
            sel = owners == owner
            bounds = self._bounds(int(owner))
            i, j = cell_of(*bounds, ra[sel], dec[sel])
            keys |= {
                (int(c["BRICKID"][owner]), int(owner), int(a), int(b))
                for a, b in zip(i, j, strict=True)
            }
        for brickid, owner, i, j in sorted(keys):
            cell = field_cell(self.seed, photsys, brickid, self._bounds(owner), i, j)
            if len(cell) == 0:
                continue
            u, v = brick_pixel_of(self.index, row, cell.ra_deg, cell.dec_deg)
            half = np.ceil(
                (TRUNCATION_RADII * cell.shape_r_arcsec + PSF_MARGIN_ARCSEC) / BRICK_PIXSCALE_ARCSEC
            )
            cu, cv = np.round(u), np.round(v)
            hit = (cu - half < win.x1) & (cu + half >= win.x0)
            hit &= (cv - half < win.y1) & (cv + half >= win.y0)
            for k in np.flatnonzero(hit):
                morph = "PSF" if cell.shape_r_arcsec[k] <= 0 else "SER"
                r = float(cell.shape_r_arcsec[k])
                profile = galaxy_profile(
                    morph, float(cell.sersic_n[k]), r, float(cell.e1[k]), float(cell.e2[k])
                )
                fluxes = cell.flux_nmgy[k, [BAND_INDEX[b] for b in bands]]
                _add_stamp(out, win, u[k], v[k], [profile.withFlux(float(f)) for f in fluxes],
                           r, psfs)  # fmt: skip

    def _bounds(self, row: int) -> tuple[float, float, float, float]:
        """(RA1, RA2, DEC1, DEC2) of brick ``row``: its unique area."""
        c = self.columns
        return tuple(float(c[k][row]) for k in ("RA1", "RA2", "DEC1", "DEC2"))  # type: ignore[return-value]

    @cached_property
    def _max_reach_arcsec(self) -> float:
        """The farthest any source's stamp reaches from its centre, arcsec."""
        cat = self.renderer.catalog()
        r = max(
            float(np.max(cat["shape_r"], initial=0.0)), float(np.max(cat["bulge_r"], initial=0.0))
        )
        return (stamp_half_pix(r) + 1) * BRICK_PIXSCALE_ARCSEC * math.sqrt(2)

    def _add_noise(
        self, out: np.ndarray, row: int, win: BrickWindow, bands: str, sigma: np.ndarray
    ) -> None:
        """Add each overlapping tile's seeded noise to ``out``."""
        brickid = int(self.columns["BRICKID"][row])
        for ty, tx, ys, xs, ws in _tiles(win):
            for i, band in enumerate(bands):
                digest = hashlib.sha256(f"{self.seed}|{brickid}|{band}|{ty}|{tx}".encode()).digest()
                rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
                tile = rng.standard_normal((TILE_PIX, TILE_PIX), dtype=np.float32) * np.float32(
                    sigma[BAND_INDEX[band]]
                )
                out[(i, *ws)] += tile[ys, xs]

    def _covered(self, row: int, win: BrickWindow) -> np.ndarray:
        """(rows, cols) float32 1/0: pixel centre inside the footprint."""
        whole = self._brick_coverage(row)
        if whole is not None:
            return np.full(win.shape, float(whole), dtype=np.float32)
        mask = np.zeros(win.shape, dtype=np.float32)
        for ty, tx, ys, xs, ws in _tiles(win):
            mask[ws] = self._tile_coverage(row, ty, tx)[ys, xs]
        return mask

    def _brick_coverage(self, row: int) -> bool | None:
        """True/False when the whole brick is inside/outside the footprint, None when mixed.

        Decided by its border pixels (a HEALPix pixel is far larger than a brick), cached.
        """
        with self._lock:
            if row in self._whole:
                return self._whole[row]
        edge = np.arange(BRICK_SIZE_PIX, dtype=np.float64) + 1.0  # FITS coordinates
        one, last = np.ones_like(edge), np.full_like(edge, BRICK_SIZE_PIX)
        x = np.concatenate([edge, edge, one, last])
        y = np.concatenate([one, last, edge, edge])
        c = self.columns
        ra, dec = tan_pixel_to_sky(
            x, y, c["RA"][row], c["DEC"][row], BRICK_CRPIX, BRICK_CRPIX, BRICK_PIXSCALE_ARCSEC
        )
        pix = pixels_of(ra, dec)
        whole = bool(np.isin(pix[0], self.footprint)) if np.all(pix == pix[0]) else None
        with self._lock:
            self._whole[row] = whole
        return whole

    def _tile_coverage(self, row: int, ty: int, tx: int) -> np.ndarray:
        """(100, 100) coverage of one tile, cached. A tile whose border pixels all lie in one
        HEALPix pixel lies wholly in it (a pixel is far larger than a tile)."""
        key = (row, ty, tx)
        with self._lock:
            if key in self._coverage:
                self._coverage.move_to_end(key)
                return self._coverage[key]
        j, i = np.mgrid[0:TILE_PIX, 0:TILE_PIX]
        border = (j == 0) | (i == 0) | (j == TILE_PIX - 1) | (i == TILE_PIX - 1)
        c = self.columns
        x, y = tx * TILE_PIX + i + 1.0, ty * TILE_PIX + j + 1.0  # FITS pixel coordinates

        def pixels(sel: np.ndarray) -> np.ndarray:
            ra, dec = tan_pixel_to_sky(
                x[sel],
                y[sel],
                c["RA"][row],
                c["DEC"][row],
                BRICK_CRPIX,
                BRICK_CRPIX,
                BRICK_PIXSCALE_ARCSEC,
            )
            return pixels_of(ra, dec)

        edge = pixels(border)
        if np.all(edge == edge[0]):
            tile = np.full((TILE_PIX, TILE_PIX), bool(np.isin(edge[0], self.footprint)))
        else:
            tile = np.isin(pixels(np.ones_like(border)), self.footprint).reshape(TILE_PIX, TILE_PIX)
        with self._lock:
            self._coverage[key] = tile
            while len(self._coverage) > COVERAGE_TILES_KEPT:
                self._coverage.popitem(last=False)
        return tile

    def write_brick(self, path: Path, row: int, band: str) -> None:
        """Write the whole image of brick ``row`` in ``band`` as a ``.fits.fz`` file."""
        c = self.columns
        image = self.window(row, BrickWindow(0, BRICK_SIZE_PIX, 0, BRICK_SIZE_PIX), band)
        if image is None:
            raise ValueError(f"brick {c['BRICKNAME'][row]} is not in the sample sky's survey")
        header = brick_image_header(
            str(c["BRICKNAME"][row]), int(c["BRICKID"][row]), band, float(c["RA"][row]),
            float(c["DEC"][row]), tuple(float(c[k][row]) for k in ("RA1", "RA2", "DEC1", "DEC2")),
        )  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        write_brick_image(path, image[0], header, QUANTUM_NMGY)

    def write_survey_bricks(self, path: Path) -> None:
        """Write ``survey-bricks.fits.gz``: every brick of the grid."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_survey_bricks(path, self.columns)

    def write_region_bricks(self, path: Path, region: str) -> None:
        """Write ``survey-bricks-dr9-<region>.fits.gz``: the bricks with data in ``region``."""
        rows = np.array(
            sorted(r for r in self.rows_with_data if self.region(r) == region), dtype=np.int64
        )
        c = self.columns
        photsys = np.full(rows.size, b"N" if region == "north" else b"S")
        cond = brick_conditions(self.seed, c["BRICKID"][rows], photsys)
        fwhm, depth_mag, nobs = cond.psf_fwhm_arcsec, cond.psfdepth_mag, cond.nobs
        sigma_psf = 10 ** ((22.5 - depth_mag) / 2.5) / 5.0
        columns = {
            "BRICKNAME": c["BRICKNAME"][rows],
            "RA": c["RA"][rows],
            "DEC": c["DEC"][rows],
            **{f"NEXP_{b.upper()}": nobs[:, i] for i, b in enumerate("grz")},
            **{f"PSFSIZE_{b.upper()}": fwhm[:, i] for i, b in enumerate("grz")},
            **{f"PSFDEPTH_{b.upper()}": 1.0 / sigma_psf[:, i] ** 2 for i, b in enumerate("grz")},
            "EBV": ebv_at(c["RA"][rows], c["DEC"][rows]),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        write_region_bricks(path, columns)

    def ensure_path(self, target: Path) -> bool:
        """:meth:`ensure_file` for an absolute path under the sky's served DR9 root."""
        ls_root = legacysurvey_root(self.renderer.root).resolve()
        if ls_root not in target.parents:
            return False
        return self.ensure_file(ls_root, target.relative_to(ls_root).as_posix())

    def ensure_file(self, ls_root: Path, relpath: str) -> bool:
        """Write the brick file or brick table at ``relpath`` under the DR9 root if missing.

        True when ``relpath`` names such a file of this sky (now on disk); False when it names
        none (not a brick path, or a brick the survey does not have).
        """
        target = ls_root / relpath
        if relpath == layout.SURVEY_BRICKS_PATH:
            writer = lambda: self.write_survey_bricks(target)  # noqa: E731
        elif relpath in {layout.survey_bricks_region_path(r): r for r in layout.REGIONS}:
            region = relpath.split("/")[0]
            writer = lambda: self.write_region_bricks(target, region)  # noqa: E731
        else:
            try:
                region, name, band = layout.parse_brick_image_path(relpath)
                row = self.index.row(name)
            except (ValueError, KeyError):
                return False
            if row not in self.rows_with_data or self.region(row) != region:
                return False
            writer = lambda: self.write_brick(target, row, band)  # noqa: E731
        with _file_lock(target):
            if not target.exists():
                writer()
        return True


_FILE_LOCKS: dict[Path, threading.Lock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _file_lock(path: Path) -> threading.Lock:
    """One lock per file, so concurrent requests draw a brick once."""
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(path, threading.Lock())


def stamp_half_pix(radius_arcsec: float) -> int:
    """Half-size h (pixels) of a source's stamp: its truncated profile plus PSF wings."""
    return int(
        math.ceil(
            (TRUNCATION_RADII * max(radius_arcsec, 0.0) + PSF_MARGIN_ARCSEC) / BRICK_PIXSCALE_ARCSEC
        )
    )


def _source_seed(seed: int, brickid: int, objid: int) -> int:
    """Seed of a source's disc structure (where its clumps and arm knots lie)."""
    digest = hashlib.sha256(f"{seed}|{brickid}|{objid}|disc".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _add_stamp(
    out: np.ndarray,
    win: BrickWindow,
    u: float,
    v: float,
    profiles: list[galsim.GSObject | None],
    radius_arcsec: float,
    psfs: list[galsim.GSObject],
    blobs: Blobs | None = None,
) -> None:
    """Draw one source at brick array position (u, v) on its own stamp; add the overlap.

    ``profiles``: per band, the unconvolved profile with its flux (None or zero flux: none).
    ``blobs``: clumps and arm knots, drawn directly and convolved with the PSF image.
    """
    h = stamp_half_pix(radius_arcsec)
    cu, cv = int(np.round(u)), int(np.round(v))
    bounds = _overlap(win, u, v, h)
    if bounds is None:
        return
    x0, x1, y0, y1 = bounds
    # Local FITS coordinates of the source on the stamp (pixel 1 is array index cu - h).
    centre = galsim.PositionD(float(u - (cu - h) + 1), float(v - (cv - h) + 1))
    size = 2 * h + 1
    blob_images = (
        draw_blobs(blobs, centre.x - 1, centre.y - 1, (size, size), BRICK_PIXSCALE_ARCSEC)
        if blobs is not None and len(blobs)
        else None
    )  # (nbands, size, size) or None
    for b, psf in enumerate(psfs):
        profile = profiles[b]
        image = galsim.ImageF(size, size, scale=BRICK_PIXSCALE_ARCSEC)
        if profile is not None and profile.flux != 0.0:
            galsim.Convolve(profile, psf, gsparams=GSPARAMS).drawImage(image=image, center=centre)
        elif blob_images is None:
            continue
        stamp = image.array  # (2h+1, 2h+1), [y, x]
        if blob_images is not None:
            stamp += fftconvolve(blob_images[b], _psf_image(psf), mode="same").astype(np.float32)
        out[b, y0 - win.y0 : y1 - win.y0, x0 - win.x0 : x1 - win.x0] += stamp[
            y0 - (cv - h) : y1 - (cv - h), x0 - (cu - h) : x1 - (cu - h)
        ]


def _psf_image(psf: galsim.GSObject) -> np.ndarray:
    """The PSF drawn on a (2m+1)^2 pixel grid, m = PSF_MARGIN_ARCSEC, for the blobs."""
    key = float(psf.fwhm)
    with _PSF_IMAGES_GUARD:
        if key in _PSF_IMAGES:
            return _PSF_IMAGES[key]
    m = int(math.ceil(PSF_MARGIN_ARCSEC / BRICK_PIXSCALE_ARCSEC))
    image = psf.drawImage(nx=2 * m + 1, ny=2 * m + 1, scale=BRICK_PIXSCALE_ARCSEC).array
    with _PSF_IMAGES_GUARD:
        _PSF_IMAGES[key] = image.astype(np.float64)
        return _PSF_IMAGES[key]


_PSF_IMAGES: dict[float, np.ndarray] = {}
_PSF_IMAGES_GUARD = threading.Lock()


def _overlap(win: BrickWindow, u: float, v: float, h: int) -> tuple[int, int, int, int] | None:
    """(x0, x1, y0, y1) of the window part a stamp of half-size h at (u, v) covers; None: none."""
    cu, cv = int(np.round(u)), int(np.round(v))
    x0, x1 = max(cu - h, win.x0), min(cu + h + 1, win.x1)
    y0, y1 = max(cv - h, win.y0), min(cv + h + 1, win.y1)
    return (x0, x1, y0, y1) if x0 < x1 and y0 < y1 else None


def _tiles(win: BrickWindow):
    """(tile row, tile col, tile slices, window slices) of each noise tile meeting ``win``."""
    for ty in range(win.y0 // TILE_PIX, (win.y1 - 1) // TILE_PIX + 1):
        for tx in range(win.x0 // TILE_PIX, (win.x1 - 1) // TILE_PIX + 1):
            ya, yb = max(win.y0, ty * TILE_PIX), min(win.y1, (ty + 1) * TILE_PIX)
            xa, xb = max(win.x0, tx * TILE_PIX), min(win.x1, (tx + 1) * TILE_PIX)
            tile = (
                slice(ya - ty * TILE_PIX, yb - ty * TILE_PIX),
                slice(xa - tx * TILE_PIX, xb - tx * TILE_PIX),
            )
            yield (
                ty,
                tx,
                tile[0],
                tile[1],
                (slice(ya - win.y0, yb - win.y0), slice(xa - win.x0, xb - win.x0)),
            )
