"""Galleries of galaxies: image queries with their nearest spectra, and search results.

Pixels come from the pairs table through a :data:`~astroclip_core.tables.pairs.PairLookup`, a
callable that maps targetids to :class:`~astroclip_core.tables.pairs.PairView` values, so
figures work from a pairs folder, an in-memory table or any other source (a test fake, a
Hugging Face dataset).

Images are shown as RGB = (z, r, g) by :func:`astroclip_core.plots.rgb_image`, spectra
box-smoothed by :func:`astroclip_core.plots.smooth_spectrum` over the good pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from astroclip_core.evaluation.knn import top_k_inner_product
from astroclip_core.formats.desi import WAVELENGTH
from astroclip_core.plots import rgb_image, smooth_spectrum
from astroclip_core.tables.pairs import PairLookup, PairView

SPECTRUM_SMOOTH_PIX = 15  # 12 Å box: noise down, absorption/emission features kept


@dataclass(frozen=True)
class RetrievalExample:
    """One image query and its most similar spectra (whole table as the bank)."""

    query_targetid: int
    query_z: float
    neighbour_targetid: tuple[int, ...]
    neighbour_z: tuple[float, ...]
    similarity: tuple[float, ...]


def retrieval_examples(
    targetid: np.ndarray,
    z: np.ndarray,
    image: np.ndarray,
    spectrum: np.ndarray,
    test: np.ndarray,
    n_queries: int = 4,
    n_neighbours: int = 3,
) -> tuple[RetrievalExample, ...]:
    """Test image queries spread over redshift (quantiles), each with its top spectra.

    ``image`` and ``spectrum`` are (N, D) unit rows; ``test`` is an (N,) bool mask.
    """
    test_rows = np.flatnonzero(test)
    if test_rows.size == 0:
        return ()
    by_z = test_rows[np.argsort(z[test_rows], kind="stable")]
    picks = by_z[np.unique(np.linspace(0.1, 0.9, n_queries) * (by_z.size - 1)).round().astype(int)]
    picks = np.unique(picks)
    index, sim = top_k_inner_product(image[picks], spectrum, min(n_neighbours, len(spectrum)))
    return tuple(
        RetrievalExample(
            int(targetid[q]),
            float(z[q]),
            tuple(int(t) for t in targetid[index[i]]),
            tuple(float(v) for v in z[index[i]]),
            tuple(float(s) for s in sim[i]),
        )
        for i, q in enumerate(picks)
    )


def _draw_image(ax: Axes, view: PairView, title: str) -> None:
    ax.imshow(rgb_image(view.image), origin="lower", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)


def _draw_spectrum(ax: Axes, view: PairView, title: str, reference: PairView | None = None) -> None:
    flux = smooth_spectrum(view.flux, ~view.mask, SPECTRUM_SMOOTH_PIX)
    ax.plot(WAVELENGTH, flux, color="tab:blue", lw=0.7, label="retrieved spectrum")
    if reference is not None:
        ref = smooth_spectrum(reference.flux, ~reference.mask, SPECTRUM_SMOOTH_PIX)
        ax.plot(
            WAVELENGTH, ref, color="tab:orange", lw=0.6, alpha=0.6, label="query's own spectrum"
        )
    finite = flux[np.isfinite(flux)]
    if finite.size:
        lo, hi = np.percentile(finite, [0.5, 99.95])  # keep emission-line peaks
        pad = 0.15 * (hi - lo) if hi > lo else 1.0
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlim(WAVELENGTH[0], WAVELENGTH[-1])
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=8)


def retrieval_examples_figure(examples: Sequence[RetrievalExample], lookup: PairLookup) -> Figure:
    """One row per example: the query image, then its top spectra (query's own one in grey)."""
    n_cols = 1 + max(len(e.neighbour_targetid) for e in examples)
    ids = {e.query_targetid for e in examples} | {t for e in examples for t in e.neighbour_targetid}
    views = lookup(sorted(ids))
    fig = Figure(figsize=(2.2 + 4.2 * (n_cols - 1), 2.3 * len(examples)), layout="constrained")
    grid = fig.add_gridspec(len(examples), n_cols, width_ratios=[1.0] + [2.2] * (n_cols - 1))
    for row, ex in enumerate(examples):
        query = views[ex.query_targetid]
        _draw_image(
            fig.add_subplot(grid[row, 0]), query, f"query {ex.query_targetid}\nz={ex.query_z:.3f}"
        )
        for col, (tid, zn, sim) in enumerate(
            zip(ex.neighbour_targetid, ex.neighbour_z, ex.similarity, strict=True), start=1
        ):
            mark = " (true partner)" if tid == ex.query_targetid else ""
            title = f"#{col}: {tid}{mark}  z={zn:.3f}  cos={sim:.3f}"
            ax = fig.add_subplot(grid[row, col])
            _draw_spectrum(ax, views[tid], title, reference=query)
            if row == 0 and col == 1:
                ax.legend(loc="upper right", fontsize=7, frameon=False)
    fig.supxlabel("wavelength [Å]   (flux in 1e-17 erg/s/cm²/Å, 12 Å box-smoothed)", fontsize=9)
    fig.suptitle("Image queries and their most similar spectra", fontsize=11)
    return fig


def neighbours_figure(query_targetid: int, neighbours: pa.Table, lookup: PairLookup) -> Figure:
    """The query galaxy, then each neighbour (image and spectrum) of a search result table."""
    tids = [int(t) for t in neighbours.column("targetid").to_pylist()]
    sims = neighbours.column("similarity").to_pylist()
    views = lookup([query_targetid, *tids])
    rows = [(query_targetid, "query", "")] + [
        (t, f"#{i + 1}", f"cos={s:.3f}" + ("  (the query galaxy)" if t == query_targetid else ""))
        for i, (t, s) in enumerate(zip(tids, sims, strict=True))
    ]
    fig = Figure(figsize=(9.0, 1.9 * len(rows)), layout="constrained")
    grid = fig.add_gridspec(len(rows), 2, width_ratios=[1.0, 4.0])
    for r, (tid, label, extra) in enumerate(rows):
        view = views[tid]
        _draw_image(fig.add_subplot(grid[r, 0]), view, label)
        title = f"{label}  {tid}  z={view.z:.3f}  {extra}"
        _draw_spectrum(fig.add_subplot(grid[r, 1]), view, title)
    fig.supxlabel("wavelength [Å]   (flux in 1e-17 erg/s/cm²/Å, 12 Å box-smoothed)", fontsize=9)
    return fig
