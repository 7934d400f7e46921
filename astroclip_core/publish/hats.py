"""HATS catalogues of a release for lsdb: the pairs' catalogue columns and each model's embeddings.

HATS (Hierarchical Adaptive Tiling Scheme) partitions a catalogue into HEALPix pixels whose order
adapts to the row density, and stores next to it a *margin cache*: the rows of neighbouring
pixels within a fixed angle of each pixel's border, so that a cross-match near a border finds its
neighbours. ``lsdb.open_catalog(path)`` reads such a collection (catalogue and margin together).

Per release this module writes, under the paths :class:`astroclip_core.storage.StorageLayout`
owns:

- ``hats/<release>/pairs``: the pairs table's catalogue columns (:data:`PAIRS_HATS_COLUMNS`, no
  images or spectra), positioned at the imaging source (``ra``, ``dec``);
- ``hats/<release>/embeddings/<model>``: every embeddings row of each model with embeddings.

Each has a margin of :data:`HATS_MARGIN_ARCSEC` (10″), so lsdb cross-matches up to that radius
are complete. Pixel orders adapt between :data:`HATS_LOWEST_ORDER` and :data:`HATS_HIGHEST_ORDER`
so that no pixel holds more than ``partition_rows`` rows: the sample sky's few thousand rows sit
in a handful of order-0..3 pixels, a full DESI release spreads to finer orders.

The tables are read into memory (the catalogue columns take ~100 bytes a row, an embeddings row
~1 KB at 128 dimensions) and partitioned by ``lsdb.from_dataframe``; a release with tens of
millions of embeddings rows would want ``hats-import``'s out-of-core pipeline instead.

Writes are staged: a local target is written in a temporary sibling folder that then replaces it
(:mod:`astroclip_core.fsio` sweeps one left by a killed run); a remote target is overwritten in
place. Re-running replaces the output.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from astroclip_core import fsio
from astroclip_core.results import SmallTable, StepResult
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.embeddings import read_embeddings
from astroclip_core.tables.pairs import read_pairs_columns

log = logging.getLogger(__name__)

# Margin cache width: lsdb cross-matches within this radius are complete across pixel borders.
HATS_MARGIN_ARCSEC = 10.0
# Pixel orders the partitioning may use (order k = nside 2**k; the pipeline's partitions are
# order 4). The sample sky needs the coarse end, a full release the fine one.
HATS_LOWEST_ORDER = 0
HATS_HIGHEST_ORDER = 7
# Most rows in one HATS pixel file: ~25 MB of catalogue columns, ~250 MB of 128-d embeddings.
PAIRS_PARTITION_ROWS = 250_000
EMBEDDINGS_PARTITION_ROWS = 250_000
# The pairs' catalogue columns: identifiers, positions (imaging source and DESI target, deg),
# redshift, photometry (nanomaggies) and the train/test split; the Legacy Surveys
# (ls_release, brickid, objid) name the imaging source in its sweep.
PAIRS_HATS_COLUMNS = (
    "targetid",
    "healpix",
    "ra",
    "dec",
    "target_ra",
    "target_dec",
    "sep_arcsec",
    "z",
    "zerr",
    "flux_g",
    "flux_r",
    "flux_z",
    "ebv",
    "ls_release",
    "brickid",
    "objid",
    "morphtype",
    "split",
)
# Constant within one model's table; the catalogue's name carries it.
_EMBEDDINGS_DROPPED = ("model",)


@dataclass(frozen=True)
class HatsSettings:
    """How a table is partitioned into HATS pixels and how wide its margin is."""

    margin_arcsec: float = HATS_MARGIN_ARCSEC
    lowest_order: int = HATS_LOWEST_ORDER
    highest_order: int = HATS_HIGHEST_ORDER
    partition_rows: int = PAIRS_PARTITION_ROWS

    def __post_init__(self) -> None:
        if not self.margin_arcsec > 0:
            raise ValueError(f"margin_arcsec = {self.margin_arcsec} must be > 0")
        if not 0 <= self.lowest_order <= self.highest_order <= 29:
            raise ValueError(
                f"orders {self.lowest_order}..{self.highest_order} must satisfy "
                "0 <= lowest <= highest <= 29"
            )
        if self.partition_rows < 1:
            raise ValueError(f"partition_rows = {self.partition_rows} must be >= 1")


@dataclass(frozen=True)
class HatsWrite:
    """One HATS collection written: where, its rows and pixels, and its margin."""

    path: str
    name: str
    rows: int
    pixels: int
    margin_rows: int
    size_bytes: int


def write_hats(
    table: pa.Table,
    out_url: str,
    name: str,
    settings: HatsSettings | None = None,
    ra_column: str = "ra",
    dec_column: str = "dec",
) -> HatsWrite:
    """Write ``table`` as the HATS collection ``out_url`` (catalogue ``name`` and its margin).

    ``ra_column`` / ``dec_column`` (deg) position the rows. Raises ValueError naming ``name``
    when the table is empty or a position is missing or not finite, since such a row has no
    pixel. Any previous collection at ``out_url`` is replaced.
    """
    import lsdb  # heavy (dask, nested-pandas): only when a catalogue is written

    settings = settings or HatsSettings()
    _check_positions(table, name, ra_column, dec_column)
    frame = table.to_pandas(types_mapper=pd.ArrowDtype)
    catalog = lsdb.from_dataframe(
        frame,
        ra_column=ra_column,
        dec_column=dec_column,
        lowest_order=settings.lowest_order,
        highest_order=settings.highest_order,
        partition_rows=settings.partition_rows,
        margin_threshold=settings.margin_arcsec,
        catalog_name=name,
    )
    if catalog.margin is None:
        raise RuntimeError(f"lsdb made no margin cache for {name!r}")
    _write_staged(catalog, out_url, name)
    info = catalog.hc_structure.catalog_info
    margin_info = catalog.margin.hc_structure.catalog_info
    written = HatsWrite(
        path=out_url,
        name=name,
        rows=int(info.total_rows),
        pixels=len(catalog.get_healpix_pixels()),
        margin_rows=int(margin_info.total_rows or 0),
        size_bytes=_tree_bytes(out_url),
    )
    log.info(
        "wrote HATS %s: %d rows in %d pixels, %d margin rows (%.0f″) to %s",
        name,
        written.rows,
        written.pixels,
        written.margin_rows,
        settings.margin_arcsec,
        out_url,
    )
    return written


def _check_positions(table: pa.Table, name: str, ra_column: str, dec_column: str) -> None:
    if table.num_rows == 0:
        raise ValueError(f"HATS catalogue {name!r}: no rows to write")
    for column in (ra_column, dec_column):
        if column not in table.column_names:
            raise ValueError(f"HATS catalogue {name!r}: no position column {column!r}")
        values = table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
        bad = int((~np.isfinite(values)).sum())
        if bad:
            raise ValueError(f"HATS catalogue {name!r}: {bad} rows with no finite {column}")


def _write_staged(catalog, out_url: str, name: str) -> None:
    """Write ``catalog`` (with its margin) at ``out_url``, replacing what is there."""
    write = {"catalog_name": name, "overwrite": True, "progress_bar": False}
    if not fsio.is_local(out_url):
        catalog.write_catalog(out_url, **write)
        return
    target = Path(out_url.removeprefix("file://"))
    stage = fsio.make_temp_dir(target)
    os.chmod(stage, 0o755)  # mkdtemp makes it owner-only; the catalogue is for sharing
    try:
        catalog.write_catalog(str(stage), **write)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = fsio.temp_name(target)
    if target.exists():
        target.rename(old)
    stage.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _tree_bytes(url: str) -> int:
    fs, root = fsio.filesystem(url)
    return int(sum(fs.du(root, total=False).values()))


def embedding_models(layout: StorageLayout, release: str) -> list[str]:
    """Names of the models of ``release`` that have an embeddings folder, sorted."""
    fs, root = fsio.filesystem(layout.embeddings_models_dir(release))
    if not fs.exists(root):
        return []
    return sorted(
        entry["name"].rstrip("/").rsplit("/", 1)[-1]
        for entry in fs.ls(root, detail=True)
        if entry["type"] == "directory" and not entry["name"].rsplit("/", 1)[-1].startswith(".")
    )


def write_release_hats(
    layout: StorageLayout,
    release: str,
    pairs_settings: HatsSettings | None = None,
    embeddings_settings: HatsSettings | None = None,
) -> StepResult:
    """Write the HATS collections of ``release``: its pairs and each model's embeddings.

    Reads the pairs table's :data:`PAIRS_HATS_COLUMNS` and every model's embeddings folder
    (:func:`embedding_models`); a release with no embeddings yet gets the pairs collection only.
    Raises FileNotFoundError naming the folder when the release has no pairs.
    """
    pairs_settings = pairs_settings or HatsSettings(partition_rows=PAIRS_PARTITION_ROWS)
    embeddings_settings = embeddings_settings or HatsSettings(
        partition_rows=EMBEDDINGS_PARTITION_ROWS
    )
    pairs = read_pairs_columns(layout.pairs_dir(release), list(PAIRS_HATS_COLUMNS))
    written = [write_hats(pairs, layout.hats_pairs_dir(release), "pairs", pairs_settings)]
    outputs = {"pairs": written[0].path}
    for model in embedding_models(layout, release):
        table = read_embeddings(layout.embeddings_dir(release, model))
        table = table.drop_columns([c for c in _EMBEDDINGS_DROPPED if c in table.column_names])
        out = layout.hats_embeddings_dir(release, model)
        written.append(write_hats(table, out, f"embeddings_{model}", embeddings_settings))
        outputs[f"embeddings/{model}"] = out
    return StepResult(
        outputs=outputs,
        rows=written[0].rows,
        size_bytes=sum(w.size_bytes for w in written),
        metadata={
            "catalogues": SmallTable(
                ("catalogue", "rows", "pixels", "margin rows", "bytes"),
                tuple((w.name, w.rows, w.pixels, w.margin_rows, w.size_bytes) for w in written),
            ),
            "margin_arcsec": pairs_settings.margin_arcsec,
            "models": len(written) - 1,
        },
    )
