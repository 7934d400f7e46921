"""Tiny fixtures shared by the tests of ``astroclip_core.sources`` (built in code, no files).

- :func:`small_fits` / :func:`check_small_fits`: a few-kB FITS file and its validator.
- :func:`cutout_backend`: a stand-in cutout service that renders a deterministic stamp per
  position (z band all zeros south of Dec -60, to exercise "no data").
- :class:`RecordingSleep`: records retry waits instead of sleeping.
"""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
from astropy.io import fits as afits

from astroclip_core.formats import FormatError
from astroclip_core.formats.legacysurvey import write_cutout
from astroclip_core.sources.faults import Response

NO_Z_DEC_MAX_DEG = -60.0


def small_fits(seed: int, n_rows: int = 64) -> bytes:
    """A FITS file with an empty primary HDU and a ``FLUX`` image of ``n_rows`` x 16 float32."""
    rng = np.random.default_rng(seed)
    hdus = afits.HDUList(
        [
            afits.PrimaryHDU(),
            afits.ImageHDU(rng.normal(size=(n_rows, 16)).astype(np.float32), name="FLUX"),
        ]
    )
    buffer = io.BytesIO()
    hdus.writeto(buffer)
    return buffer.getvalue()


def check_small_fits(source: Path | bytes, url: str) -> None:
    """Validator for :func:`small_fits` files (a path or the bytes): a complete ``FLUX`` HDU."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if not data.startswith(b"SIMPLE  ="):
        raise FormatError(url, f"not a FITS file (starts with {data[:16]!r})")
    try:
        with afits.open(io.BytesIO(data), memmap=False) as hdul:
            flux = hdul["FLUX"].data
    except (OSError, KeyError, TypeError, ValueError) as err:
        raise FormatError(url, f"cannot read FLUX: {err}") from err
    if flux is None or flux.ndim != 2 or flux.shape[1] != 16:
        raise FormatError(url, "FLUX is not an (N, 16) image")


def write_tree(root: Path, relpaths: list[str]) -> dict[str, bytes]:
    """Write one :func:`small_fits` per relative path under ``root``; return path -> bytes."""
    written = {}
    for i, rel in enumerate(relpaths):
        data = small_fits(seed=i)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        written[rel] = data
    return written


def render_cutout(ra_deg: float, dec_deg: float, size_pix: int) -> np.ndarray:
    """(3, S, S) float32 stamp that depends only on the position."""
    seed = int(round(ra_deg * 1e6)) * 1_000_003 + int(round((dec_deg + 90) * 1e6))
    image = np.random.default_rng(seed).normal(0.0, 1.0, size=(3, size_pix, size_pix))
    image = image.astype(np.float32)
    if dec_deg < NO_Z_DEC_MAX_DEG:
        image[2] = 0.0
    return image


def cutout_backend(target: str) -> Response:
    """Answer ``/viewer/fits-cutout?ra=..&dec=..&size=..&bands=grz`` like the real service."""
    parts = urlsplit(target)
    if not parts.path.endswith("fits-cutout"):
        return Response(404, b"no such endpoint\n", "text/plain")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    ra, dec, size = float(query["ra"]), float(query["dec"]), int(query["size"])
    image = render_cutout(ra, dec, size)
    return Response(200, write_cutout(image, ra, dec, float(query["pixscale"]), query["bands"]))


class RecordingSleep:
    """A ``sleep`` that records the requested waits and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
