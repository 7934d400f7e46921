"""DESI redshift catalogue (zall-pix / zpix, HDU ZCATALOG): writer, reader and galaxy selection.

The real catalogue is about 2 GB (EDR), so the reader asks fitsio for only the columns it
needs: those the selection cuts on plus those the caller requests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import fitsio
import numpy as np
import pyarrow as pa

from astroclip_core.formats import FormatError
from astroclip_core.formats._fits import (
    build_records,
    open_fits,
    read_hdu,
    require_columns,
    require_hdus,
    table_to_arrow,
    write_fits_atomic,
)
from astroclip_core.formats.desi_columns import ZCATALOG_COLUMNS


@dataclass(frozen=True)
class GalaxySelection:
    """The clean-galaxy cuts applied by :func:`read_zcatalog`; ``None`` disables a cut.

    Defaults follow DATA_SOURCES.md: SPECTYPE == 'GALAXY', ZWARN == 0, DELTACHI2 > 25
    (DESI's tutorial starting point), OBJTYPE == 'TGT', COADD_FIBERSTATUS == 0, the primary
    flag (ZCAT_PRIMARY, present in every release; SV_PRIMARY for EDR's sv-only primary) so
    each TARGETID appears once, and z_min <= Z < z_max. AstroCLIP's sample spans ~0-0.6; z_max 1.6 keeps DESI's ELGs, whose
    n(z) reaches ~1.6 (where [O II] alone sits in the z arm).
    """

    primary_column: str | None = "ZCAT_PRIMARY"
    objtype: str | None = "TGT"
    fiberstatus_zero: bool = True
    spectype: str | None = "GALAXY"
    zwarn_zero: bool = True
    deltachi2_min: float | None = 25.0
    z_min: float | None = 0.0
    z_max: float | None = 1.6

    def columns(self) -> list[str]:
        """The ZCATALOG columns these cuts read."""
        needed = {
            self.primary_column: self.primary_column is not None,
            "OBJTYPE": self.objtype is not None,
            "COADD_FIBERSTATUS": self.fiberstatus_zero,
            "SPECTYPE": self.spectype is not None,
            "ZWARN": self.zwarn_zero,
            "DELTACHI2": self.deltachi2_min is not None,
            "Z": self.z_min is not None or self.z_max is not None,
        }
        return [name for name, used in needed.items() if used and name is not None]

    def cuts(self, rec: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """(name, keep-mask) per enabled cut, in the order they are applied."""
        out: list[tuple[str, np.ndarray]] = []
        if self.primary_column is not None:
            out.append((f"{self.primary_column}", rec[self.primary_column].astype(bool)))
        if self.objtype is not None:
            out.append((f"OBJTYPE=={self.objtype}", _stripped(rec["OBJTYPE"]) == self.objtype))
        if self.fiberstatus_zero:
            out.append(("COADD_FIBERSTATUS==0", rec["COADD_FIBERSTATUS"] == 0))
        if self.spectype is not None:
            out.append((f"SPECTYPE=={self.spectype}", _stripped(rec["SPECTYPE"]) == self.spectype))
        if self.zwarn_zero:
            out.append(("ZWARN==0", rec["ZWARN"] == 0))
        if self.deltachi2_min is not None:
            out.append((f"DELTACHI2>{self.deltachi2_min:g}", rec["DELTACHI2"] > self.deltachi2_min))
        if self.z_min is not None:
            out.append((f"Z>={self.z_min:g}", rec["Z"] >= self.z_min))
        if self.z_max is not None:
            out.append((f"Z<{self.z_max:g}", rec["Z"] < self.z_max))
        return out


@dataclass(frozen=True)
class SelectionReport:
    """How many rows each cut removed, in order (a row is counted by the first cut it fails)."""

    n_input: int
    cuts: list[tuple[str, int]] = field(default_factory=list)
    n_selected: int = 0


def _stripped(values: np.ndarray) -> np.ndarray:
    """A FITS string column as str with the trailing blanks of FITS padding removed."""
    text = values.astype(str) if values.dtype.kind == "S" else values
    return np.char.rstrip(text)


def write_zcatalog(
    path: str | Path, columns: Mapping[str, np.ndarray], header: Mapping[str, object] | None = None
) -> None:
    """Write a redshift catalogue: empty PRIMARY + BINTABLE 'ZCATALOG', atomically.

    Every ZCATALOG_COLUMNS column is required (and no others); values are cast to the
    canonical dtypes. ``header`` keywords go into the ZCATALOG header.
    """
    rec = build_records(f"{path} ZCATALOG", columns, ZCATALOG_COLUMNS)
    keys = [{"name": key, "value": value} for key, value in (header or {}).items()]

    def build(fits: fitsio.FITS) -> None:
        fits.write(None)
        fits.write_table(rec, extname="ZCATALOG", header=keys)

    write_fits_atomic(path, build)


def read_zcatalog(
    path: str | Path,
    columns: Sequence[str] | None = None,
    selection: GalaxySelection | None = GalaxySelection(),  # noqa: B008 - frozen, immutable
) -> tuple[pa.Table, SelectionReport]:
    """Read the ZCATALOG HDU (only the needed columns) and apply a galaxy selection.

    ``columns`` are ZCATALOG column names (case-insensitive); None means every column. The
    table has lower-case column names, strings stripped of FITS padding, rows in file order.
    ``selection=None`` keeps every row. Missing HDU or columns raise FormatError.
    """
    wanted = [name.upper() for name in columns] if columns is not None else None
    cut_columns = selection.columns() if selection is not None else []
    with open_fits(path) as fits:
        require_hdus(fits, path, ["ZCATALOG"])
        hdu = fits["ZCATALOG"]
        if wanted is None:
            wanted = list(hdu.get_colnames())
        to_read = list(dict.fromkeys([*wanted, *cut_columns]))
        require_columns(hdu, path, to_read)
        rec = read_hdu(path, "ZCATALOG", lambda: hdu.read(columns=to_read))
    if rec.dtype.names is None:
        raise FormatError(path, "ZCATALOG is not a table with named columns")
    keep = np.ones(len(rec), dtype=bool)
    removed: list[tuple[str, int]] = []
    for name, passes in selection.cuts(rec) if selection is not None else []:
        new_keep = keep & passes
        removed.append((name, int(keep.sum() - new_keep.sum())))
        keep = new_keep
    table = table_to_arrow(rec[keep][wanted])
    report = SelectionReport(n_input=len(rec), cuts=removed, n_selected=int(keep.sum()))
    return table, report
