"""Legacy Surveys coadd bricks: the brick index, brick pixel geometry, stamps cut from bricks.

A DR9 brick image is 3600 x 3600 pixels at 0.262"/pixel in a TAN projection centred on the
brick centre (CRVAL = the index's RA, DEC; CRPIX = 1800.5, 1800.5; see
:mod:`astroclip_core.sky.tan`). Bricks overlap a little (3600 x 0.262" = 0.262 deg > 0.25 deg),
so every sky position has one *owning* brick: the index row with RA1 <= ra < RA2 and
DEC1 <= dec < DEC2.

Contract of :func:`stamp_from_bricks` (the one resampler: the sample sky's cutout service and
the pipeline's brick path both call it): a stamp is a TAN image of ``size_pix`` square pixels
of ``pixscale_arcsec`` centred on (ra, dec), like a cutout-service response. Each of its pixels
takes the Lanczos-3 interpolation (kernel normalised to sum 1) of its owning brick's pixels at
its position, so near a brick edge or corner a stamp draws on 2-4 bricks. A pixel whose owning
brick has no data (the window reader returns None: a brick the survey does not have) is 0.
Where the windows come from does not matter: the same brick pixels give the same stamp, bit
for bit, because every pixel is computed by the same float operations in the same order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from astroclip_core.sky.tan import tan_pixel_to_sky, tan_sky_to_pixel

BRICK_SIZE_PIX = 3600
BRICK_PIXSCALE_ARCSEC = 0.262
BRICK_CRPIX = (BRICK_SIZE_PIX + 1) / 2.0  # 1800.5, as in the DR9 brick headers
LANCZOS_A = 3  # kernel half-width, pixels: 2 * LANCZOS_A taps per axis


@dataclass(frozen=True)
class BrickIndex:
    """Rows of a ``survey-bricks`` table: names and centres/bounds in degrees, all (N,)."""

    brickname: np.ndarray  # str
    ra_deg: np.ndarray
    dec_deg: np.ndarray
    ra1_deg: np.ndarray
    ra2_deg: np.ndarray
    dec1_deg: np.ndarray
    dec2_deg: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.brickname)
        for name in ("ra_deg", "dec_deg", "ra1_deg", "ra2_deg", "dec1_deg", "dec2_deg"):
            if np.shape(getattr(self, name)) != (n,):
                raise ValueError(f"BrickIndex.{name} has shape {np.shape(getattr(self, name))}")

    def __len__(self) -> int:
        return len(self.brickname)

    @cached_property
    def _rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(order sorted by (DEC1, RA1), distinct DEC1 values, start of each in ``order``)."""
        order = np.lexsort((self.ra1_deg, self.dec1_deg))
        dec1_sorted = self.dec1_deg[order]
        starts = np.flatnonzero(np.r_[True, dec1_sorted[1:] != dec1_sorted[:-1]])
        return order, dec1_sorted[starts], np.r_[starts, len(order)]

    @cached_property
    def _row_of_name(self) -> dict[str, int]:
        return {str(name): i for i, name in enumerate(self.brickname)}

    def row(self, brickname: str) -> int:
        """Index row of a brick name; KeyError naming it when the index has no such brick."""
        try:
            return self._row_of_name[brickname]
        except KeyError:
            raise KeyError(f"brick {brickname!r} is not in the brick index") from None

    def owners(self, ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
        """(N,) int64 index row of the brick owning each position; -1 where no row does."""
        ra = np.mod(np.asarray(ra_deg, dtype=np.float64), 360.0)
        dec = np.asarray(dec_deg, dtype=np.float64)
        order, dec1_rows, bounds = self._rows
        dec_row = np.searchsorted(dec1_rows, dec, side="right") - 1
        out = np.full(ra.shape, -1, dtype=np.int64)
        for r in np.unique(dec_row[dec_row >= 0]):
            sel = np.flatnonzero(dec_row == r)
            members = order[bounds[r] : bounds[r + 1]]  # one Dec row, by RA1
            col = np.searchsorted(self.ra1_deg[members], ra[sel], side="right") - 1
            cand = members[np.maximum(col, 0)]
            ok = (col >= 0) & (ra[sel] < self.ra2_deg[cand]) & (dec[sel] < self.dec2_deg[cand])
            out[sel] = np.where(ok, cand, -1)
        return out


@dataclass(frozen=True)
class BrickWindow:
    """A rectangle of one brick's pixel array: rows ``y0:y1``, columns ``x0:x1`` (0-based)."""

    x0: int
    x1: int
    y0: int
    y1: int

    def __post_init__(self) -> None:
        if not (
            0 <= self.x0 < self.x1 <= BRICK_SIZE_PIX and 0 <= self.y0 < self.y1 <= BRICK_SIZE_PIX
        ):
            raise ValueError(f"{self} is not a non-empty window of a {BRICK_SIZE_PIX}-pixel brick")

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return self.y1 - self.y0, self.x1 - self.x0


@dataclass(frozen=True)
class BrickPart:
    """The stamp pixels one brick owns, and the Lanczos taps that compute them.

    ``pix`` (n,) flat indices into the (size*size) stamp; ``ix``/``iy`` (n,) window column/row
    of each pixel's first tap; ``wx``/``wy`` (2a, n) float32 normalised tap weights along x, y.
    """

    row: int
    window: BrickWindow
    pix: np.ndarray
    ix: np.ndarray
    iy: np.ndarray
    wx: np.ndarray
    wy: np.ndarray


def _lanczos_exact(frac: np.ndarray, a: int) -> np.ndarray:
    """(n, 2a) normalised Lanczos-``a`` weights of taps at offsets -a+1..a from floor(u)."""
    d = frac[:, None] - np.arange(-a + 1, a + 1)[None, :]  # (n, 2a) distance to each tap
    w = np.sinc(d) * np.sinc(d / a)
    return w / w.sum(axis=1, keepdims=True)


# Weights tabulated at 1/LANCZOS_STEPS pixel: positions are rounded to that (1.2e-4 pixel),
# as kernel tables in image resamplers do, which makes a weight a lookup instead of two sines.
LANCZOS_STEPS = 4096
_LANCZOS_TABLE = _lanczos_exact(np.arange(LANCZOS_STEPS + 1) / LANCZOS_STEPS, LANCZOS_A)


def lanczos_weights(frac: np.ndarray) -> np.ndarray:
    """(n, 2a) Lanczos-3 weights of taps at offsets -2..3 from floor(u), ``frac`` = u - floor(u).

    L(d) = sinc(d) sinc(d/3) for |d| < 3, normalised to sum 1 per row so a flat image stays
    flat; ``frac`` in [0, 1] is rounded to 1/LANCZOS_STEPS pixel.
    """
    return _LANCZOS_TABLE[np.rint(np.asarray(frac) * LANCZOS_STEPS).astype(np.int64)]


def brick_pixel_of(
    index: BrickIndex, row: int, ra_deg: np.ndarray, dec_deg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """0-based array coordinates (u = x-1, v = y-1) of positions in the pixel grid of brick ``row``."""
    x, y = tan_sky_to_pixel(
        ra_deg,
        dec_deg,
        float(index.ra_deg[row]),
        float(index.dec_deg[row]),
        BRICK_CRPIX,
        BRICK_CRPIX,
        BRICK_PIXSCALE_ARCSEC,
    )
    return x - 1.0, y - 1.0


def plan_stamp(
    index: BrickIndex, ra_deg: float, dec_deg: float, size_pix: int, pixscale_arcsec: float
) -> list[BrickPart]:
    """The bricks (and windows of them) a stamp centred on (ra, dec) needs, by index row.

    Pixels owned by no index row are in no part (they stay 0). Raises ValueError when a
    pixel's kernel would reach outside its owning brick (an index that does not describe
    3600-pixel bricks at 0.262"/pixel).
    """
    crpix = (size_pix + 1) / 2.0
    ys, xs = np.mgrid[1 : size_pix + 1, 1 : size_pix + 1]  # FITS pixel coordinates, (S, S)
    ra, dec = tan_pixel_to_sky(
        xs.ravel(), ys.ravel(), ra_deg, dec_deg, crpix, crpix, pixscale_arcsec
    )
    owner = index.owners(ra, dec)
    parts = []
    for row in np.unique(owner[owner >= 0]):
        pix = np.flatnonzero(owner == row)
        u, v = brick_pixel_of(index, int(row), ra[pix], dec[pix])
        iu, iv = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
        first_u, first_v = iu - LANCZOS_A + 1, iv - LANCZOS_A + 1
        x0, x1 = int(first_u.min()), int(first_u.max()) + 2 * LANCZOS_A
        y0, y1 = int(first_v.min()), int(first_v.max()) + 2 * LANCZOS_A
        if x0 < 0 or y0 < 0 or x1 > BRICK_SIZE_PIX or y1 > BRICK_SIZE_PIX:
            raise ValueError(
                f"stamp at ({ra_deg:.6f}, {dec_deg:.6f}) needs pixels x {x0}:{x1}, y {y0}:{y1} "
                f"of brick {index.brickname[row]}, outside its {BRICK_SIZE_PIX}-pixel grid"
            )
        parts.append(
            BrickPart(
                int(row),
                BrickWindow(x0, x1, y0, y1),
                pix,
                first_u - x0,
                first_v - y0,
                np.ascontiguousarray(lanczos_weights(u - iu).T, dtype=np.float32),
                np.ascontiguousarray(lanczos_weights(v - iv).T, dtype=np.float32),
            )
        )
    return parts


# Reads a window of brick ``row``: (nbands, rows, columns) float32, or None (no data there).
WindowReader = Callable[[int, BrickWindow], "np.ndarray | None"]


def stamp_from_bricks(
    parts: list[BrickPart], size_pix: int, nbands: int, read_window: WindowReader
) -> np.ndarray:
    """The (nbands, size, size) float32 stamp of a :func:`plan_stamp` plan (module contract)."""
    out = np.zeros((nbands, size_pix * size_pix), dtype=np.float32)
    taps = 2 * LANCZOS_A
    for part in parts:
        window = read_window(part.row, part.window)
        if window is None:
            continue
        if window.shape != (nbands, *part.window.shape):
            raise ValueError(
                f"window of brick row {part.row} has shape {window.shape}, "
                f"expected {(nbands, *part.window.shape)}"
            )
        width = part.window.shape[1]
        flat = window.reshape(nbands, -1)
        # (taps*taps, n) flat window index of every tap of every pixel; one gather for all.
        offsets = (np.arange(taps)[:, None] * width + np.arange(taps)[None, :]).ravel()
        values = np.take(flat, (part.iy * width + part.ix)[None, :] + offsets[:, None], axis=1)
        acc = np.zeros((nbands, part.pix.size), dtype=np.float32)
        # Separable: each tap row interpolated along x, then the rows along y. Fixed order,
        # elementwise float32 arithmetic: the result depends only on the pixels.
        for j in range(taps):
            along_x = np.zeros_like(acc)
            for i in range(taps):
                along_x += part.wx[i] * values[:, j * taps + i]
            acc += part.wy[j] * along_x
        out[:, part.pix] = acc
    return out.reshape(nbands, size_pix, size_pix)
