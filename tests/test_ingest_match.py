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


def test_a_source_on_a_border_goes_to_one_partition_of_the_release(tmp_path) -> None:
    """Two partitions' match steps, each reading its neighbour's spectra from the release
    catalogue, use a source claimed from both sides of their border once between them."""
    from tests.test_partition_match import _contested_layout

    layout = StorageLayout(str(tmp_path))
    ra_spec, dec_spec, ra_src, dec_src = _contested_layout(with_fallback=True)
    pixels = [1703, 1702]  # spectrum A (0.3" from the source) in 1703, B (0.5") in 1702
    catalog = pa.table({
        "targetid": pa.array([11, 22], pa.int64()),
        "target_ra": ra_spec, "target_dec": dec_spec,
        "release": pa.array([9010, 9010], pa.int16()),
        "brickid": pa.array([1, 1], pa.int32()), "brick_objid": pa.array([5, 6], pa.int32()),
        "partition": pa.array(pixels, pa.int32()),
    })  # fmt: skip
    fsio.atomic_write_parquet(layout.catalog_file(RELEASE), catalog)
    n = ra_src.size
    # Both sources lie within a few arcsec of the border: inside both partitions' 10" margin.
    sources = record_margin(
        pa.table(
            {
                "ra": ra_src,
                "dec": dec_src,
                "release": [9010] * n,
                "brickid": [1] * n,
                "objid": list(range(n)),
                "type": ["REX"] * n,
                **{
                    c: pa.array([1.0] * n, pa.float32())
                    for c in ("flux_g", "flux_r", "flux_z", "ebv")
                },
            }
        ),
        10.0,
    )
    used, metadata = [], {}
    for pixel in pixels:
        write_interim(layout, "sources", RELEASE, pixel, sources)
        metadata[pixel] = match_partition_stage(layout, RELEASE, pixel).metadata
        used += read_interim(layout, "matches", RELEASE, pixel).column("objid").to_pylist()
    assert sorted(used) == [0, 1]  # A keeps the border source 0, B takes its next one
    counts = {
        p: (md["border_sources_contested"], md["border_sources_ceded"])
        for p, md in metadata.items()
    }
    assert counts == {1703: (1, 0), 1702: (1, 1)}
    assert metadata[1702]["border_spectra_lost_nearest"] == 1
