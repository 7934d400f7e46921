"""Low-level FITS helpers shared by the DESI and Legacy Surveys readers and writers.

Readers open files through :func:`open_fits`, which turns every way a file can fail to be
FITS (missing, empty, wrong magic bytes, truncated, unreadable by cfitsio) into a
:class:`~astroclip_core.formats.FormatError` that names the file. Writers go through
:func:`write_fits_atomic`, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import fitsio
import numpy as np
import pyarrow as pa

from astroclip_core.formats import FormatError
from astroclip_core.fsio import atomic_write_bytes, is_local, make_temp_file, scratch_dir

FITS_BLOCK_BYTES = 2880
FITS_MAGIC = b"SIMPLE  ="


def check_fits_bytes(source: object, head: bytes, size_bytes: int) -> None:
    """Raise FormatError unless ``head`` (the first bytes of a file) starts a FITS file."""
    if size_bytes == 0:
        raise FormatError(source, "empty file (0 bytes), not a FITS file")
    if not head.startswith(FITS_MAGIC):
        raise FormatError(source, f"not a FITS file (starts with {head[:16]!r})")
    if size_bytes % FITS_BLOCK_BYTES:
        raise FormatError(
            source,
            f"truncated: {size_bytes} bytes is not a whole number of {FITS_BLOCK_BYTES}-byte FITS blocks",
        )


def _check_complete(fits: fitsio.FITS, path: str, size_bytes: int) -> None:
    """Raise FormatError when the headers promise more data than the file holds."""
    for hdu in fits:
        end = hdu.get_offsets()["data_end"]
        if end > size_bytes:
            name = hdu.get_extname() or f"HDU {hdu.get_extnum()}"
            raise FormatError(
                path, f"truncated: {name} data ends at byte {end} but the file has {size_bytes}"
            )


@contextmanager
def open_fits(path: str | Path) -> Iterator[fitsio.FITS]:
    """Open a local FITS file read-only after checking it is non-empty, FITS and complete."""
    path = str(path)
    try:
        size_bytes = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(len(FITS_MAGIC))
    except OSError as err:
        raise FormatError(path, f"cannot read file: {err}") from err
    check_fits_bytes(path, head, size_bytes)
    try:
        fits = fitsio.FITS(path)
    except OSError as err:
        raise FormatError(path, f"cfitsio cannot open it: {err}") from err
    try:
        _check_complete(fits, path, size_bytes)
        yield fits
    finally:
        fits.close()


def require_hdus(fits: fitsio.FITS, path: str | Path, names: Sequence[str]) -> None:
    """Raise FormatError naming every HDU of ``names`` that the file lacks."""
    missing = [name for name in names if name not in fits]
    if missing:
        raise FormatError(path, f"missing HDU(s) {missing}")


def require_columns(hdu: fitsio.hdu.TableHDU, path: str | Path, names: Sequence[str]) -> None:
    """Raise FormatError naming every column of ``names`` that the table HDU lacks."""
    present = set(hdu.get_colnames())
    missing = [name for name in names if name not in present]
    if missing:
        raise FormatError(path, f"HDU {hdu.get_extname()} is missing column(s) {missing}")


def read_hdu(path: str | Path, what: str, read: Callable[[], np.ndarray]) -> np.ndarray:
    """Call ``read`` and turn cfitsio's read errors into a FormatError naming ``what``."""
    try:
        return read()
    except OSError as err:
        raise FormatError(path, f"cannot read {what}: {err}") from err


def table_to_arrow(rec: np.ndarray, lower: bool = True) -> pa.Table:
    """A FITS record array as an Arrow table: native byte order, strings stripped.

    Fixed-width string columns become Arrow strings with trailing blanks removed (FITS pads
    with spaces). Vector columns (e.g. COEFF, shape (N, 10)) become fixed-size lists.
    """
    arrays: dict[str, pa.Array] = {}
    for name in rec.dtype.names or ():
        col = rec[name]
        key = name.lower() if lower else name
        if col.dtype.kind in "SU":
            text = col.astype(str) if col.dtype.kind == "S" else col
            arrays[key] = pa.array(np.char.rstrip(text).tolist(), type=pa.string())
            continue
        native = np.ascontiguousarray(col, dtype=col.dtype.newbyteorder("="))
        if native.ndim == 1:
            arrays[key] = pa.array(native)
        else:
            width = int(np.prod(native.shape[1:]))
            flat = pa.array(native.reshape(-1))
            arrays[key] = pa.FixedSizeListArray.from_arrays(flat, width)
    return pa.table(arrays)


def build_records(
    source: str,
    columns: Mapping[str, np.ndarray],
    layout: Mapping[str, str],
) -> np.ndarray:
    """Cast ``columns`` onto the record layout ``layout`` (column -> dtype str).

    Every layout column is required; extra columns are an error too, so a typo never
    disappears silently. Scalars broadcast to every row. Vector columns use subarray dtypes
    such as ``(10,)>f8``.
    """
    missing = [name for name in layout if name not in columns]
    extra = [name for name in columns if name not in layout]
    if missing or extra:
        raise ValueError(f"{source}: missing column(s) {missing}, unknown column(s) {extra}")
    n_rows = {name: len(v) for name, v in columns.items() if np.ndim(v) > 0}
    if len(set(n_rows.values())) > 1:
        raise ValueError(f"{source}: columns have different lengths {n_rows}")
    n = next(iter(n_rows.values()), 0)  # scalar columns broadcast to every row
    dtype = np.dtype([(name, layout[name]) for name in layout])
    rec = np.zeros(n, dtype=dtype)
    for name in layout:
        values = np.asarray(columns[name])
        if values.dtype.kind == "U":
            values = np.char.encode(values, "ascii")
        target = rec.dtype[name]
        if target.kind == "S" and values.dtype.kind == "S" and values.itemsize > target.itemsize:
            too_long = values[np.char.str_len(values) > target.itemsize]
            if too_long.size:
                raise ValueError(
                    f"{source}: column {name} holds {too_long[0]!r}, longer than {target.itemsize} chars"
                )
        rec[name] = values
    return rec


def write_fits_atomic(path: str | Path, build: Callable[[fitsio.FITS], None]) -> None:
    """Write a FITS file by calling ``build`` on an open writable fitsio.FITS, atomically.

    Local paths get a temporary file in the same folder that is renamed into place; fsspec
    URLs are built in a temporary folder and uploaded in one put.
    """
    target = str(path)
    if is_local(target):
        local = Path(target[len("file://") :] if target.startswith("file://") else target)
        fd, tmp = make_temp_file(local)
        os.close(fd)
        try:
            with fitsio.FITS(tmp, "rw", clobber=True) as fits:
                build(fits)
            os.replace(tmp, local)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
    atomic_write_bytes(target, fits_bytes(build))


def fits_bytes(build: Callable[[fitsio.FITS], None]) -> bytes:
    """The bytes of a FITS file built by ``build`` (written through a temporary file)."""
    with scratch_dir("fits") as tmpdir:
        tmp = tmpdir / "out.fits"
        with fitsio.FITS(str(tmp), "rw", clobber=True) as fits:
            build(fits)
        return tmp.read_bytes()


def _plain_image_dtype(header: Mapping[str, object]) -> tuple[np.dtype, bool] | None:
    """(on-disk dtype, flip top bit) for unscaled float32 or BZERO-2^31 uint32 images, else None."""
    bitpix = header.get("BITPIX")
    bscale = header.get("BSCALE", 1)
    bzero = header.get("BZERO", 0)
    if bitpix == -32 and bscale == 1 and bzero == 0:
        return np.dtype(">f4"), False
    if bitpix == 32 and bscale == 1 and bzero == 2**31:
        # FITS stores uint32 as int32 + 2^31: the unsigned value is the raw bits, top bit flipped
        return np.dtype(">u4"), True
    return None


def read_image_rows_into(
    fits: fitsio.FITS,
    path: str | Path,
    hdu: str,
    runs: Sequence[tuple[int, int]],
    out: np.ndarray,
) -> None:
    """Copy rows ``runs`` ([start, stop) pairs) of 2-D image ``hdu`` into ``out`` (n_sel, npix).

    Plain float32 / uint32 images are memory-mapped and converted from big-endian straight
    into ``out`` (one pass, no intermediate array); anything else goes through fitsio.
    The caller has checked the file is complete (:func:`open_fits`) and the dims.
    """
    image = fits[hdu]
    layout = _plain_image_dtype(image.read_header())
    nrows, npix = image.get_dims()
    if layout is None:
        row = 0
        for start, stop in runs:
            out[row : row + stop - start] = read_hdu(
                path, hdu, lambda a=start, b=stop: image[a:b, :]
            )
            row += stop - start
        return
    dtype, flip_top_bit = layout
    try:
        mapped = np.memmap(
            str(path),
            dtype=dtype,
            mode="r",
            offset=image.get_offsets()["data_start"],
            shape=(nrows, npix),
        )
    except (OSError, ValueError) as err:
        raise FormatError(path, f"cannot map {hdu}: {err}") from err
    row = 0
    for start, stop in runs:
        out[row : row + stop - start] = mapped[start:stop]
        row += stop - start
    if flip_top_bit:
        out ^= np.uint32(2**31)
    del mapped
