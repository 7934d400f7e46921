"""Legacy Surveys cutout and sweep readers/writers against the real DR9 cutout."""

from __future__ import annotations

import io
from pathlib import Path

import fitsio
import numpy as np
from astropy.io import fits as afits

from astroclip_core.formats.desi_columns import blank_columns
from astroclip_core.formats.legacysurvey import (
    SWEEP_COLUMNS,
    read_cutout,
    read_sweep,
    write_cutout,
    write_sweep,
)

REAL_CUTOUT = Path(__file__).parent / "data" / "legacysurvey" / "dr9-cutout-357.9087-54.8817.fits"


def test_real_cutout_path_and_bytes() -> None:
    image = read_cutout(REAL_CUTOUT)
    assert image.shape == (3, 256, 256) and image.dtype == np.float32
    np.testing.assert_array_equal(image, fitsio.read(str(REAL_CUTOUT)))
    np.testing.assert_array_equal(read_cutout(REAL_CUTOUT.read_bytes()), image)
    assert all(np.abs(band).sum() > 0 for band in image)  # every band has data


def test_write_cutout_roundtrip_and_header_like_real() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(0, 0.01, (3, 64, 48)).astype(np.float32)
    data = write_cutout(image, ra_deg=150.1, dec_deg=2.2)
    np.testing.assert_array_equal(read_cutout(data), image)
    header = afits.getheader(io.BytesIO(data))
    real_keys = [k for k in afits.getheader(REAL_CUTOUT) if k != "COMMENT"]
    assert [k for k in header if k != "COMMENT"] == real_keys
    assert (header["CRPIX1"], header["CRPIX2"]) == (24.5, 32.5)  # (W+1)/2, (H+1)/2
    np.testing.assert_allclose(
        [header["CD1_1"], header["CD2_2"]], [-0.262 / 3600, 0.262 / 3600], rtol=1e-12
    )
    assert (header["CRVAL1"], header["CRVAL2"]) == (150.1, 2.2)


def test_write_cutout_reproduces_real_file_bytes() -> None:
    real = REAL_CUTOUT.read_bytes()
    assert write_cutout(read_cutout(real), 357.9087, -54.8817) == real


def test_all_zero_band_is_returned_not_rejected() -> None:
    image = np.ones((3, 8, 8), dtype=np.float32)
    image[1] = 0.0  # the service's "no coverage" answer
    np.testing.assert_array_equal(read_cutout(write_cutout(image, 1.0, 1.0)), image)


def sweep_columns(n: int) -> dict[str, np.ndarray]:
    cols = blank_columns(SWEEP_COLUMNS, n)
    cols["RELEASE"] = 9010
    cols["BRICKNAME"] = "2169p032"
    cols["OBJID"] = np.arange(n)
    cols["TYPE"] = np.array(["PSF", "REX", "EXP", "DEV", "SER"])[np.arange(n) % 5]
    cols["RA"] = np.linspace(216.0, 217.0, n)
    cols["DEC"] = np.linspace(3.0, 4.0, n)
    cols["FLUX_R"] = np.arange(n, dtype=np.float32) * 0.5
    cols["NOBS_G"] = 3
    cols["MASKBITS"] = np.where(np.arange(n) % 2 == 0, 0, 2048)
    return cols


def test_sweep_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "sweep-210p000-220p005.fits"
    cols = sweep_columns(11)
    write_sweep(path, cols)
    table = read_sweep(path)
    assert table.column_names == [c.lower() for c in SWEEP_COLUMNS]
    assert table["type"].to_pylist() == cols["TYPE"].tolist()
    assert table["ra"].to_pylist() == cols["RA"].tolist()
    assert table["flux_r"].to_pylist() == cols["FLUX_R"].tolist()
    assert table["maskbits"].to_pylist() == cols["MASKBITS"].tolist()
    with fitsio.FITS(str(path)) as fits:
        dtype = fits["SWEEP"].get_rec_dtype()[0]
    assert all(np.dtype(SWEEP_COLUMNS[name]) == dtype[name] for name in SWEEP_COLUMNS)


def test_sweep_columns_and_box(tmp_path: Path) -> None:
    path = tmp_path / "sweep.fits"
    write_sweep(path, sweep_columns(11))  # RA 216.0, 216.1, ... 217.0
    table = read_sweep(path, columns=["objid", "RA"], ra_range_deg=(216.25, 216.55))
    assert table.column_names == ["objid", "ra"]
    assert table["objid"].to_pylist() == [3, 4, 5]
