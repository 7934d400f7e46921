"""A PNG contact sheet of sample-sky galaxies: each cutout (g, r, z as RGB) beside its spectrum.

The cutout is rendered in-process by the same renderer the server uses; the spectrum is read
back from the release's coadd file with the project's reader (arms merged), smoothed, with the
main emission and absorption lines marked at (1+z) times their rest wavelengths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec

from astroclip_core.formats.desi import WAVELENGTH, read_coadd, read_zcatalog
from astroclip_core.fsio import atomic_write_bytes, read_parquet, scratch_dir
from astroclip_core.plots import render_png, rgb_image, smooth_spectrum
from astroclip_core.samplesky.cutouts import CutoutRenderer, CutoutRequest
from astroclip_core.samplesky.generate import desi_root, read_manifest, truth_path
from astroclip_core.samplesky.lazy import sky_file_bytes
from astroclip_core.samplesky.templates import (
    ABSORPTION_LINES_ANGSTROM,
    EMISSION_LINES_ANGSTROM,
)
from astroclip_core.sources import layout

STAMP_PIX = 96
SPECTRUM_SMOOTH_PIX = 7  # 5.6 Å box over the good pixels


def _pick(release: str, root: Path, n: int) -> list[dict[str, Any]]:
    """``n`` clean galaxies spread in redshift, with their coadd file."""
    rel = read_manifest(root).footprint(release).release
    zcat, _ = read_zcatalog(
        desi_root(root) / layout.zcatalog_path(rel),
        columns=["TARGETID", "SURVEY", "PROGRAM", "HEALPIX", "Z"],
    )
    truth = read_parquet(str(truth_path(root, release))).to_pylist()
    by_id = {row["targetid"]: row for row in truth if row["ls_ra"] is not None}
    rows = [r for r in zcat.to_pylist() if r["targetid"] in by_id]
    rows.sort(key=lambda r: r["z"])
    pick = [rows[int(i)] for i in np.linspace(0, len(rows) - 1, min(n, len(rows)))]
    return [{**by_id[r["targetid"]], **r, "release": rel} for r in pick]


def write_preview(root: Path | str, release: str, out: Path | str, n: int = 16) -> Path:
    """Write the contact sheet PNG of ``n`` galaxies of ``release``; return its path."""
    root, out = Path(root), Path(out)
    renderer = CutoutRenderer(root)
    galaxies = _pick(release, root, n)
    if not galaxies:
        raise ValueError(f"{root}: release {release} has no selected galaxies to preview")
    ncols = 2
    nrows = int(np.ceil(len(galaxies) / ncols))
    fig = Figure(figsize=(8.5 * ncols, 2.3 * nrows))
    grid = fig.add_gridspec(
        nrows, 2 * ncols, width_ratios=[1, 3.2] * ncols, wspace=0.12, hspace=0.45, top=0.95
    )
    for k, gal in enumerate(galaxies):
        r, c = divmod(k, ncols)
        _panel(fig, grid, r, c, gal, renderer)
    fig.suptitle(
        f"Sample sky {release}: cutouts (g,r,z) and DESI spectra, lines at (1+z)$\\lambda_{{rest}}$",
        y=0.985,
    )
    atomic_write_bytes(str(out), render_png(fig, dpi=90, bbox_inches="tight"))
    return out


def _panel(
    fig: Figure, grid: GridSpec, r: int, c: int, gal: dict[str, Any], renderer: CutoutRenderer
) -> None:
    req = CutoutRequest(
        ra_deg=float(gal["ls_ra"]), dec_deg=float(gal["ls_dec"]), size_pix=STAMP_PIX
    )
    ax_img = fig.add_subplot(grid[r, 2 * c])
    ax_img.imshow(rgb_image(renderer.render(req)), origin="lower")
    ax_img.set_xticks([])
    ax_img.set_yticks([])
    ax_img.set_title(f'{gal["morphtype"]} r$_e$={float(gal["shape_r_arcsec"]):.1f}"', fontsize=8)
    rel = gal["release"]
    relpath = layout.coadd_path(rel, str(gal["survey"]), str(gal["program"]), int(gal["healpix"]))
    # The coadd may be one the server draws on request (samplesky.lazy): read its bytes.
    with scratch_dir("preview") as tmp:
        path = tmp / "coadd.fits"
        path.write_bytes(sky_file_bytes(renderer.root, relpath))
        spec = read_coadd(path, targetids=[int(gal["targetid"])])
    flux = np.asarray(spec["flux"][0].as_py(), dtype=np.float64)
    ivar = np.asarray(spec["ivar"][0].as_py(), dtype=np.float64)
    smooth = smooth_spectrum(flux, ivar > 0, SPECTRUM_SMOOTH_PIX)
    ax = fig.add_subplot(grid[r, 2 * c + 1])
    ax.plot(WAVELENGTH, smooth, lw=0.5, color="k")
    lo, hi = np.nanpercentile(smooth, [1, 99.7])
    ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.25 * (hi - lo))
    ax.set_xlim(WAVELENGTH[0], WAVELENGTH[-1])
    z = float(gal["z"])
    for lines, colour in (
        (EMISSION_LINES_ANGSTROM, "tab:blue"),
        (ABSORPTION_LINES_ANGSTROM, "tab:red"),
    ):
        for name, lam in lines.items():
            obs = lam * (1 + z)
            if WAVELENGTH[0] < obs < WAVELENGTH[-1]:
                ax.axvline(obs, color=colour, lw=0.6, alpha=0.6)
                ax.text(
                    obs,
                    hi + 0.18 * (hi - lo),
                    name,
                    fontsize=6,
                    color=colour,
                    ha="center",
                    va="top",
                )
    ax.tick_params(labelsize=7)
    ax.text(
        0.99,
        0.04,
        f"z={z:.3f} {gal['tracer']} {gal['colour_class']}  log M*={float(gal['log_mstar']):.1f}",
        transform=ax.transAxes,
        ha="right",
        fontsize=7,
    )
