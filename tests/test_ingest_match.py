"""The cross-match step refuses a radius wider than the margin its imaging sources record."""

from __future__ import annotations

import pyarrow as pa
import pytest

from astroclip_core import fsio
from astroclip_core.ingest.imaging import record_margin, recorded_margin_arcsec
from astroclip_core.ingest.match import match_partition_stage
from astroclip_core.sky.partition_match import require_margin_covers_radius
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.interim import read_interim, write_interim

RELEASE, PIXEL = "edr", 1703


def _write_sources(layout: StorageLayout, margin_arcsec: float | None) -> None:
    """A one-source interim sources table, with the margin recorded unless it is None."""
    table = pa.table({"ra": [150.0], "dec": [2.0], "release": [9010], "brickid": [1], "objid": [0]})
    if margin_arcsec is not None:
        table = record_margin(table, margin_arcsec)
    write_interim(layout, "sources", RELEASE, PIXEL, table)


def test_the_margin_survives_the_sources_file(tmp_path) -> None:
    layout = StorageLayout(str(tmp_path))
    _write_sources(layout, 7.5)
    assert recorded_margin_arcsec(read_interim(layout, "sources", RELEASE, PIXEL), "t") == 7.5


def test_a_radius_wider_than_the_recorded_margin_is_refused(tmp_path) -> None:
    layout = StorageLayout(str(tmp_path))
    _write_sources(layout, 10.0)
    with pytest.raises(ValueError, match=r"radius_arcsec = 15\.0 exceeds margin_arcsec = 10\.0"):
        match_partition_stage(layout, RELEASE, PIXEL, radius_arcsec=15.0)
    assert not fsio.exists(layout.interim_file(RELEASE, PIXEL, "matches"))
    require_margin_covers_radius(10.0, 10.0)  # a radius equal to the margin is allowed


def test_sources_without_a_recorded_margin_are_refused_by_name(tmp_path) -> None:
    layout = StorageLayout(str(tmp_path))
    _write_sources(layout, None)
    sources_url = layout.interim_file(RELEASE, PIXEL, "sources")
    with pytest.raises(ValueError, match="records no astroclip.margin_arcsec") as err:
        match_partition_stage(layout, RELEASE, PIXEL, radius_arcsec=1.0)
    assert sources_url in str(err.value) and "imaging_sources" in str(err.value)
