"""The sample sky's scale option: N times the pixels per release, contiguous, nested.

Scale 1 is the preset itself; a grown release keeps its own pixels (whose sky is drawn from
(seed, pixel) alone, so their rows do not change) and adds neighbours.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from astroclip_core.cli import main
from astroclip_core.samplesky.config import SIZE_PRESETS, preset, scaled
from astroclip_core.samplesky.generate import generate, read_manifest, truth_path
from astroclip_core.sky.healpix import PARTITION_NSIDE, HealpixPixel


def _connected(pixels: tuple[int, ...]) -> bool:
    """Whether the pixels form one group under 8-neighbour adjacency."""
    todo, seen = [pixels[0]], {pixels[0]}
    while todo:
        for n in HealpixPixel(PARTITION_NSIDE, todo.pop()).neighbours():
            if n.pixel in pixels and n.pixel not in seen:
                seen.add(n.pixel)
                todo.append(n.pixel)
    return seen == set(pixels)


@pytest.mark.parametrize("size", sorted(SIZE_PRESETS))
def test_scale_one_is_the_preset_as_it_is(size: str) -> None:
    assert preset(size) is SIZE_PRESETS[size]
    assert preset(size, scale=1) == SIZE_PRESETS[size]
    assert scaled(SIZE_PRESETS[size], 1) is SIZE_PRESETS[size]


@pytest.mark.parametrize(("size", "scale"), [("default", 4), ("default", 16), ("tiny", 4)])
def test_scaled_releases_have_n_times_the_pixels_contiguous_and_nested(
    size: str, scale: int
) -> None:
    base, grown = preset(size), preset(size, scale=scale)
    assert [fp.name for fp in grown.releases] == [fp.name for fp in base.releases]
    for small, big in zip(base.releases, grown.releases, strict=True):
        assert len(big.pixels) == scale * len(small.pixels)
        assert len(set(big.pixels)) == len(big.pixels)
        assert set(small.pixels) <= set(big.pixels)
        assert _connected(big.pixels)
        assert (big.specprod, big.target_fraction) == (small.specprod, small.target_fraction)
    # Releases that nest at scale 1 nest when grown (EDR inside DR1 inside DR2).
    for i, early in enumerate(base.releases):
        for j, late in enumerate(base.releases[i + 1 :], i + 1):
            if set(early.pixels) <= set(late.pixels):
                assert set(grown.releases[i].pixels) <= set(grown.releases[j].pixels)
    # Only the footprints change.
    assert grown.seed == base.seed and grown.galaxies_per_pixel == base.galaxies_per_pixel


def test_a_bad_scale_is_refused_by_value() -> None:
    with pytest.raises(ValueError, match="scale 0 must be an integer >= 1"):
        preset("tiny", scale=0)
    with pytest.raises(ValueError, match="the sky has 3072"):
        preset("default", scale=1000)


def test_grown_sky_keeps_the_rows_of_the_original_pixels(tmp_path: Path) -> None:
    base_cfg, grown_cfg = (
        preset("tiny", galaxies_per_pixel=12),
        preset("tiny", galaxies_per_pixel=12, scale=2),
    )
    generate(tmp_path / "x1", base_cfg, ["edr"])
    generate(tmp_path / "x2", grown_cfg, ["edr"])
    assert read_manifest(tmp_path / "x2") == grown_cfg
    t1, t2 = (pq.read_table(truth_path(tmp_path / d, "edr")) for d in ("x1", "x2"))
    old_pixels = list(base_cfg.footprint("edr").pixels)
    kept = t2.filter(pc.is_in(t2["healpix"], value_set=pa.array(old_pixels, t2["healpix"].type)))
    assert kept.equals(t1)
    assert set(t2["healpix"].to_pylist()) == set(grown_cfg.footprint("edr").pixels)


def test_generate_command_takes_a_scale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "sky"
    args = ["sample-sky", "generate", "--root", str(root), "--size", "tiny", "--release", "edr"]
    assert main([*args, "--galaxies-per-pixel", "8", "--scale", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["releases"][0]["n_pixels"] == 3 * len(SIZE_PRESETS["tiny"].releases[0].pixels)
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--scale", "0"])
    assert exit_.value.code == 2 and "0 is outside" in capsys.readouterr().err
