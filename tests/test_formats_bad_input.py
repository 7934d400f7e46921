"""Every reader raises FormatError naming the file and the problem; never silent zeros."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import fitsio
import numpy as np
import numpy.lib.recfunctions as rfn
import pytest

from astroclip_core.formats import FormatError
from astroclip_core.formats.desi import (
    ZCATALOG_COLUMNS,
    read_coadd,
    read_coadd_arrays,
    read_redrock,
    read_zcatalog,
    write_zcatalog,
)
from astroclip_core.formats.desi_columns import blank_columns
from astroclip_core.formats.legacysurvey import (
    SWEEP_COLUMNS,
    read_cutout,
    read_sweep,
    write_cutout,
    write_sweep,
)

DATA = Path(__file__).parent / "data"
REAL_COADD = DATA / "desi" / "coadd-sv3-dark-26065.fits"
REAL_REDROCK = DATA / "desi" / "redrock-test.fits"
REAL_CUTOUT = DATA / "legacysurvey" / "dr9-cutout-357.9087-54.8817.fits"


def _zcatalog(path: Path) -> Path:
    cols = blank_columns(ZCATALOG_COLUMNS, 200)  # > 2 FITS blocks, so half is a real cut
    cols["TARGETID"] = np.arange(200)
    write_zcatalog(path, cols)
    return path


def _sweep(path: Path) -> Path:
    cols = blank_columns(SWEEP_COLUMNS, 200)
    write_sweep(path, cols)
    return path


# reader name -> (reader, function giving a valid file of that kind in a folder)
READERS: dict[str, tuple[Callable[[Path], object], Callable[[Path], Path]]] = {
    "coadd": (read_coadd, lambda d: REAL_COADD),
    "redrock": (read_redrock, lambda d: REAL_REDROCK),
    "zcatalog": (read_zcatalog, lambda d: _zcatalog(d / "zall.fits")),
    "sweep": (read_sweep, lambda d: _sweep(d / "sweep.fits")),
    "cutout": (read_cutout, lambda d: REAL_CUTOUT),
}


def rewrite(src: Path, dst: Path, drop: tuple[str, ...] = (), replace: dict | None = None) -> Path:
    """Copy a FITS file HDU by HDU, dropping or replacing the data of some HDUs."""
    replace = replace or {}
    with fitsio.FITS(str(src)) as fin, fitsio.FITS(str(dst), "rw", clobber=True) as fout:
        for i, hdu in enumerate(fin):
            name = hdu.get_extname()
            if name in drop:
                continue
            data = replace.get(name, hdu.read() if i else None)
            if hdu.get_exttype() == "BINARY_TBL":
                fout.write_table(data, extname=name)
            else:
                fout.write(data, extname=name or None)
    return dst


@pytest.mark.parametrize("kind", list(READERS))
def test_not_fits(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "notfits.fits"
    path.write_text("<html>404 Not Found</html>" * 200)
    with pytest.raises(FormatError, match=f"{path}.*not a FITS file"):
        READERS[kind][0](path)


@pytest.mark.parametrize("kind", list(READERS))
def test_empty_file(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "empty.fits"
    path.write_bytes(b"")
    with pytest.raises(FormatError, match=f"{path}.*empty file"):
        READERS[kind][0](path)


@pytest.mark.parametrize("kind", list(READERS))
def test_truncated_at_half(kind: str, tmp_path: Path) -> None:
    reader, make = READERS[kind]
    whole = make(tmp_path).read_bytes()
    path = tmp_path / "half.fits"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(FormatError, match=f"{path}.*truncated"):
        reader(path)


def test_missing_file_is_format_error(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="cannot read file"):
        read_coadd(tmp_path / "nope.fits")


@pytest.mark.parametrize(
    ("kind", "hdu"),
    [
        ("coadd", "R_MASK"),
        ("coadd", "FIBERMAP"),
        ("redrock", "REDSHIFTS"),
        ("zcatalog", "ZCATALOG"),
    ],
)
def test_missing_hdu(kind: str, hdu: str, tmp_path: Path) -> None:
    reader, make = READERS[kind]
    path = rewrite(make(tmp_path), tmp_path / "missing.fits", drop=(hdu,))
    with pytest.raises(FormatError, match=f"{path}.*missing HDU.*{hdu}"):
        reader(path)


def test_sweep_without_table(tmp_path: Path) -> None:
    path = tmp_path / "sweep.fits"
    fitsio.write(str(path), np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(FormatError, match="missing HDU"):
        read_sweep(path)


def _drop_column(rec: np.ndarray, column: str) -> np.ndarray:
    keep = [name for name in rec.dtype.names if name != column]
    return rfn.repack_fields(rec[keep])


@pytest.mark.parametrize(
    ("kind", "hdu", "column"),
    [
        ("coadd", "FIBERMAP", "TARGET_RA"),
        ("redrock", "REDSHIFTS", "Z"),
        ("zcatalog", "ZCATALOG", "DELTACHI2"),
        ("sweep", "SWEEP", "FLUX_R"),
    ],
)
def test_missing_column(kind: str, hdu: str, column: str, tmp_path: Path) -> None:
    reader, make = READERS[kind]
    src = make(tmp_path)
    table = _drop_column(fitsio.read(str(src), ext=hdu), column)
    path = rewrite(src, tmp_path / "nocol.fits", replace={hdu: table})
    with pytest.raises(FormatError, match=f"{path}.*missing column.*{column}"):
        reader(path)


def test_zcatalog_selection_column_missing(tmp_path: Path) -> None:
    src = _zcatalog(tmp_path / "z.fits")
    table = _drop_column(fitsio.read(str(src), ext="ZCATALOG"), "ZCAT_PRIMARY")
    path = rewrite(src, tmp_path / "nocol.fits", replace={"ZCATALOG": table})
    with pytest.raises(FormatError, match="ZCAT_PRIMARY"):
        read_zcatalog(path, columns=["TARGETID"])  # the default selection needs it


def test_unexpected_wavelength_grid(tmp_path: Path) -> None:
    shifted = fitsio.read(str(REAL_COADD), ext="R_WAVELENGTH") + 0.4
    path = rewrite(REAL_COADD, tmp_path / "grid.fits", replace={"R_WAVELENGTH": shifted})
    with pytest.raises(FormatError, match=f"{path}.*unexpected wavelength grid in R_WAVELENGTH"):
        read_coadd_arrays(path)


def test_spectra_rows_disagree_with_fibermap(tmp_path: Path) -> None:
    fewer = fitsio.read(str(REAL_COADD), ext="Z_FLUX")[:4]
    path = rewrite(REAL_COADD, tmp_path / "rows.fits", replace={"Z_FLUX": fewer})
    with pytest.raises(
        FormatError, match=f"{path}.*Z_FLUX has shape \\(4, 2881\\).*5 FIBERMAP rows"
    ):
        read_coadd(path)


def _cutout_with(
    tmp_path: Path, edit: Callable[[list[dict]], list[dict]], image: np.ndarray | None = None
) -> Path:
    """The real cutout with an edited header (and optionally another image)."""
    header = [
        r
        for r in fitsio.read_header(str(REAL_CUTOUT)).records()
        if r["name"] not in ("SIMPLE", "BITPIX", "EXTEND", "COMMENT")
        and not r["name"].startswith("NAXIS")
    ]
    data = fitsio.read(str(REAL_CUTOUT)) if image is None else image
    path = tmp_path / "cutout.fits"
    fitsio.write(str(path), data, header=edit(header), clobber=True)
    return path


def _set(key: str, value: object) -> Callable[[list[dict]], list[dict]]:
    return lambda recs: [{**r, "value": value} if r["name"] == key else r for r in recs]


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (_set("BANDS", "gri"), "wrong bands"),
        (_set("BAND1", "z"), "wrong bands"),
        (_set("CD2_2", 0.5 / 3600), "non-square pixels"),
    ],
)
def test_cutout_bad_header(edit: Callable, problem: str, tmp_path: Path) -> None:
    path = _cutout_with(tmp_path, edit)
    with pytest.raises(FormatError, match=f"{path}.*{problem}"):
        read_cutout(path)


def test_cutout_wrong_pixel_scale() -> None:
    data = write_cutout(np.ones((3, 4, 4), dtype=np.float32), 1.0, 2.0, pixscale_arcsec=0.5)
    with pytest.raises(FormatError, match="<bytes>.*wrong pixel scale 0.5"):
        read_cutout(data)


def test_cutout_wrong_band_count() -> None:
    data = write_cutout(np.ones((4, 4, 4), dtype=np.float32), 1.0, 2.0, bands="griz")
    with pytest.raises(FormatError, match="wrong bands.*4 planes"):
        read_cutout(data)


def test_cutout_nan_is_rejected() -> None:
    image = np.ones((3, 4, 4), dtype=np.float32)
    image[2, 1, 1] = np.nan
    with pytest.raises(FormatError, match="1 non-finite pixel"):
        read_cutout(write_cutout(image, 1.0, 2.0))


def test_cutout_without_3d_image(tmp_path: Path) -> None:
    path = _cutout_with(tmp_path, lambda recs: recs, image=np.ones((4, 4), dtype=np.float32))
    with pytest.raises(FormatError, match="3-D.*shape \\(4, 4\\)"):
        read_cutout(path)
    empty = tmp_path / "nodata.fits"
    with fitsio.FITS(str(empty), "rw", clobber=True) as fits:
        fits.write(None, header={"BANDS": "grz"})
    with pytest.raises(FormatError, match="3-D.*no data"):
        read_cutout(empty)


def test_cutout_bytes_not_fits() -> None:
    with pytest.raises(FormatError, match="<bytes>.*not a FITS file"):
        read_cutout(b"Too Many Requests")
    with pytest.raises(FormatError, match="<bytes>.*empty file"):
        read_cutout(b"")


@pytest.mark.parametrize("kind", ["coadd", "cutout"])
def test_truncated_on_a_block_boundary(kind: str, tmp_path: Path) -> None:
    """Cut inside the data but on a 2880-byte boundary: the headers promise more bytes."""
    reader, make = READERS[kind]
    whole = make(tmp_path).read_bytes()
    path = tmp_path / "cut.fits"
    path.write_bytes(whole[: (len(whole) // 2 // 2880) * 2880])
    with pytest.raises(
        FormatError, match=f"{path}.*truncated.*needs|{path}.*truncated.*ends at byte"
    ):
        reader(path)
