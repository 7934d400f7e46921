"""Does a model trained on the sample sky read the redshift of a real galaxy spectrum?

The check (issue 16 §4): a real rest-frame spectrum, the DESI LRG stack
(``tests/data/desi/stack-LRG.fits``: FLUX, IVAR 1 × 11217 and WAVE 2487–6974 Å, vacuum),
is redshifted onto the DESI coadd grid (7781 pixels, 3600–9824 Å at 0.8 Å) at each of a set
of redshifts, scaled to a realistic LRG fibre magnitude, and given noise drawn from the ivar of
real DESI coadds. The model's spectrum encoder embeds those spectra, and a distance-weighted
k-NN (:mod:`astroclip_core.evaluation.knn`, k=64) against the run's train-split spectrum
embeddings (the sample-sky bank) predicts their redshift.

Simulation, per spectrum (:func:`simulate_spectra`):

- rest-frame flux density f(λ/(1+z)) is averaged over each observed 0.8 Å pixel (a flux-
  conserving rebin: features land at λ_rest (1+z) and no pixel is point-sampled);
- the spectrum is scaled so that its AB magnitude over the observed window
  :data:`NORM_WINDOW_ANGSTROM` (8300–9000 Å, the blue part of the DECam z band, which the stack
  covers at every z in 0.3–1.0) equals ``z_fiber_mag`` (default 21.0; DESI's main LRG
  selection keeps z_fiber < 21.6, Zhou et al. 2023) at every redshift (``magnitude_mode``
  "fixed"), or at ``z_ref`` only (``"luminosity"``: one galaxy of fixed luminosity, fainter
  with luminosity distance in flat ΛCDM, H0 70, Ωm 0.3, and k-corrected by the template itself,
  since the window sees a different rest-frame stretch at each z);
- noise: one real coadd spectrum of the pool (:func:`read_noise_pool`) is drawn (a file at
  random, then one of its spectra); its ivar and
  mask become the spectrum's, and Gaussian noise of sigma = 1/sqrt(ivar) is added. Pixels with
  ivar = 0, and pixels outside the stack's rest coverage, get ivar 0 and a mask bit.

The noise is Gaussian from the real ivar: the real pattern of sky-line variance and arm ends,
not the real sky-subtraction residuals. The stack's own noise (S/N ~14 per 0.4 Å pixel) is
kept, and is small beside the fibre noise added.

Metrics are :func:`astroclip_core.evaluation.metrics.redshift_metrics` (σ_NMAD, outliers
|Δz|/(1+z) > 0.15, median bias) over all spectra, plus per redshift the median and spread of
the predictions. :meth:`TransferResult.to_flat_dict` gives the flat dotted keys
(``transfer.lrg_stack.sigma_nmad``, …) that ``evaluation.json`` uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from astroclip_core.errors import FormatError
from astroclip_core.evaluation.knn import DEFAULT_K, knn_regress, l2_normalise
from astroclip_core.evaluation.metrics import (
    OUTLIER_THRESHOLD,
    RedshiftMetrics,
    normalised_redshift_error,
    redshift_metrics,
    sigma_nmad,
)
from astroclip_core.formats.desi import N_WAVELENGTH, WAVELENGTH, merge_arms, read_coadd_arrays

REPO_DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "desi"
LRG_STACK = REPO_DATA / "stack-LRG.fits"
# Real coadds whose ivar (and mask) give the noise: an EDR sv3-dark healpix coadd (main-survey
# depth), an SV1 tile coadd (5 quasar fibres, deeper) and 25 fibres of another SV1 tile
# (arms only, no FIBERMAP or MASK).
NOISE_COADDS = (
    REPO_DATA / "coadd-sv3-dark-26065.fits",
    REPO_DATA / "coadd-1-80693-thru20210204.fits",
    REPO_DATA / "everest-80605-0-first25-arms.fits",
)
NORM_WINDOW_ANGSTROM = (8300.0, 9000.0)  # observed frame; see the module docstring
DEFAULT_Z_FIBER_MAG = 21.0
DEFAULT_REDSHIFTS = tuple(float(z) for z in np.round(np.linspace(0.3, 1.0, 15), 4))
DEFAULT_DRAWS = 8
MAGNITUDE_MODES = ("fixed", "luminosity")
MASK_NODATA = np.uint32(1 << 8)  # DESI specmask NODATA: outside the template's rest coverage
C_ANGSTROM_PER_S = 2.99792458e18
AB_ZEROPOINT = 48.6  # m_AB = -2.5 log10(f_nu [erg/s/cm2/Hz]) - 48.6
FLUX_UNIT_CGS = 1e-17  # DESI flux unit, erg/s/cm2/A
MIN_VALID_FRACTION = 0.5  # a pool spectrum with fewer valid pixels is no noise model


@dataclass(frozen=True, eq=False)
class RestTemplate:
    """A rest-frame spectrum: flux density (any linear f_lambda unit) on vacuum wavelengths."""

    name: str
    wave_angstrom: np.ndarray  # (M,) increasing
    flux: np.ndarray  # (M,)


@dataclass(frozen=True, eq=False)
class NoisePool:
    """Real coadd noise models on the 7781-pixel grid; row i came from ``source[i]``."""

    ivar: np.ndarray  # (P, 7781) float32, 1e34 (s2 cm4 A2)/erg2
    mask: np.ndarray  # (P, 7781) uint32, nonzero = bad
    source: tuple[str, ...]  # "<file name>:<row>"

    def __len__(self) -> int:
        return len(self.source)


@dataclass(frozen=True, eq=False)
class SimulatedSpectra:
    """Redshifted, scaled and noised copies of a template on the DESI grid."""

    flux: np.ndarray  # (N, 7781) float32, 1e-17 erg/s/cm2/A
    ivar: np.ndarray  # (N, 7781) float32
    mask: np.ndarray  # (N, 7781) uint32
    z: np.ndarray  # (N,) float64 true redshift
    noise_row: np.ndarray  # (N,) int64 row of the NoisePool that gave the noise


@dataclass(frozen=True)
class TransferConfig:
    """What :func:`simulate_spectra` makes: ``n_draws`` noise draws at each redshift."""

    redshifts: tuple[float, ...] = DEFAULT_REDSHIFTS
    n_draws: int = DEFAULT_DRAWS
    z_fiber_mag: float = DEFAULT_Z_FIBER_MAG
    magnitude_mode: str = "fixed"  # "fixed" or "luminosity" (module docstring)
    z_ref: float = 0.7  # where a "luminosity" spectrum has z_fiber_mag
    seed: int = 0
    k: int = DEFAULT_K

    def __post_init__(self) -> None:
        if not self.redshifts or any(not 0 <= z < 10 for z in self.redshifts):
            raise ValueError(f"redshifts must be a non-empty list in [0, 10), got {self.redshifts}")
        if self.n_draws < 1 or self.k < 1:
            raise ValueError(f"n_draws ({self.n_draws}) and k ({self.k}) must be >= 1")
        if not 10 <= self.z_fiber_mag <= 30:
            raise ValueError(f"z_fiber_mag {self.z_fiber_mag} is not an AB magnitude in 10..30")
        if self.magnitude_mode not in MAGNITUDE_MODES or not 0 < self.z_ref < 10:
            raise ValueError(
                f"magnitude_mode {self.magnitude_mode!r} must be one of {MAGNITUDE_MODES} and "
                f"z_ref {self.z_ref} in (0, 10)"
            )

    def target_magnitude(self, z: float) -> float:
        """The window's AB magnitude before the template's own k-correction: ``z_fiber_mag``,
        or (luminosity mode) that plus the distance-modulus and (1+z) bandwidth change from
        ``z_ref`` to ``z`` (the k-correction follows from redshifting the template)."""
        if self.magnitude_mode == "fixed":
            return self.z_fiber_mag
        from astropy.cosmology import FlatLambdaCDM

        cosmo = FlatLambdaCDM(H0=70.0, Om0=0.3)
        d_ratio = float(cosmo.luminosity_distance(z) / cosmo.luminosity_distance(self.z_ref))
        # f_lambda,obs = L_lambda(lambda / (1+z)) / (4 pi D_L^2 (1+z))
        return (
            self.z_fiber_mag
            + 5 * math.log10(d_ratio)
            + 2.5 * math.log10((1 + z) / (1 + self.z_ref))
        )


@dataclass(frozen=True)
class PerRedshift:
    """Predictions of the ``n`` spectra at one true redshift."""

    z: float
    median_pred: float
    sigma_nmad: float  # of Δz/(1+z) over the draws
    outlier_fraction: float
    n: int


@dataclass(frozen=True, eq=False)
class TransferResult:
    """The check's figures: overall metrics, per-redshift rows and every prediction."""

    name: str  # key prefix, e.g. "lrg_stack"
    metrics: RedshiftMetrics
    per_z: tuple[PerRedshift, ...]
    z_true: np.ndarray  # (N,)
    z_pred: np.ndarray  # (N,)
    z_fiber_mag: float
    magnitude_mode: str
    n_bank: int
    bank_z_range: tuple[float, float]
    noise_sources: tuple[str, ...] = field(default=())

    def to_flat_dict(self) -> dict[str, float | int | str | None]:
        """Flat dotted keys ``transfer.<name>.…`` for ``evaluation.json``; NaN becomes None.

        Per redshift: ``transfer.<name>.z_0p300.{median_pred,sigma_nmad,outlier_fraction}``.
        """
        base = f"transfer.{self.name}"
        out: dict[str, float | int | str | None] = {
            f"{base}.{key}": getattr(self.metrics, key)
            for key in ("sigma_nmad", "outlier_fraction", "bias", "mean_bias", "r2", "n")
        }
        out[f"{base}.z_fiber_mag"] = self.z_fiber_mag
        out[f"{base}.magnitude_mode"] = self.magnitude_mode
        out[f"{base}.n_bank"] = self.n_bank
        for row in self.per_z:
            tag = f"{base}.z_" + f"{row.z:.3f}".replace(".", "p")
            for key in ("median_pred", "sigma_nmad", "outlier_fraction"):
                out[f"{tag}.{key}"] = getattr(row, key)
        out[f"definitions.{base}"] = (
            "real DESI LRG stack redshifted onto the coadd grid, scaled to z_fiber_mag (AB over "
            f"{NORM_WINDOW_ANGSTROM[0]:.0f}-{NORM_WINDOW_ANGSTROM[1]:.0f} A observed), Gaussian "
            "noise from real coadd ivar; z by k-NN on the train-split spectrum embeddings"
        )
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in out.items()
        }

    def table_lines(self) -> list[str]:
        """A printable per-redshift table and the overall line."""
        lines = [f"{'z':>6}  {'median z_pred':>13}  {'sigma_nmad':>10}  {'outliers':>8}  n"]
        for r in self.per_z:
            lines.append(
                f"{r.z:6.3f}  {r.median_pred:13.3f}  {r.sigma_nmad:10.4f}  "
                f"{r.outlier_fraction:8.2f}  {r.n}"
            )
        m = self.metrics
        lines.append(
            f"all: sigma_nmad {m.sigma_nmad:.4f}, outliers {m.outlier_fraction:.3f}, "
            f"bias {m.bias:+.4f}, n {m.n}; bank {self.n_bank} train spectra, z "
            f"{self.bank_z_range[0]:.3f}-{self.bank_z_range[1]:.3f}; z_fiber {self.z_fiber_mag} ({self.magnitude_mode})"
        )
        return lines


# ---- inputs ----


def _existing(path: str | Path) -> Path:
    """``path`` as a Path; FileNotFoundError naming it (and where the defaults live) if absent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist (the check's real DESI files are the repository's "
            f"{REPO_DATA}; pass other paths to use other files)"
        )
    return path


def read_rest_template(path: str | Path = LRG_STACK, row: int = 0) -> RestTemplate:
    """Row ``row`` of a rest-frame stack file with FLUX (R, M), WAVE (M,) HDUs (fastspecfit's
    stack layout). FormatError naming the file when an HDU is missing or the shapes differ."""
    import fitsio

    path = str(_existing(path))
    with fitsio.FITS(path) as fits:
        for name in ("FLUX", "WAVE"):
            if name not in fits:
                raise FormatError(path, f"missing HDU {name!r}: not a rest-frame stack file")
        flux = np.atleast_2d(fits["FLUX"].read()).astype(np.float64)
        wave = np.asarray(fits["WAVE"].read(), dtype=np.float64)
    if flux.shape[-1] != wave.size or not 0 <= row < flux.shape[0]:
        raise FormatError(path, f"FLUX {flux.shape} does not fit WAVE {wave.shape} (row {row})")
    if not (np.diff(wave) > 0).all() or not np.isfinite(flux[row]).all():
        raise FormatError(path, "WAVE is not increasing or FLUX holds NaN/inf")
    return RestTemplate(Path(path).stem, wave, flux[row])


def _arms_only(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ivar, mask) (N, 7781) of a file holding only B/R/Z FLUX, IVAR, WAVELENGTH (no FIBERMAP,
    no MASK), merged with the project's arm merge; its arms must be on the DESI arm grids."""
    import fitsio

    from astroclip_core.formats.desi import ARMS, GRID_TOLERANCE_ANGSTROM, arm_wavelength

    flux, ivar, mask = {}, {}, {}
    with fitsio.FITS(str(path)) as fits:
        for arm in ARMS:
            for kind in ("FLUX", "IVAR", "WAVELENGTH"):
                if f"{arm}_{kind}" not in fits:
                    raise FormatError(str(path), f"missing HDU {arm}_{kind}")
            wave = fits[f"{arm}_WAVELENGTH"].read()
            if wave.shape != arm_wavelength(arm).shape or not np.allclose(
                wave, arm_wavelength(arm), rtol=0, atol=GRID_TOLERANCE_ANGSTROM
            ):
                raise FormatError(str(path), f"{arm} arm is not on the DESI {arm} grid")
            flux[arm] = fits[f"{arm}_FLUX"].read()
            ivar[arm] = fits[f"{arm}_IVAR"].read()
            mask[arm] = np.zeros(flux[arm].shape, np.uint32)
    _, merged_ivar, merged_mask = merge_arms(flux, ivar, mask)
    return merged_ivar, merged_mask


def read_noise_pool(paths: Sequence[str | Path] = NOISE_COADDS) -> NoisePool:
    """The target spectra of real coadds as noise models (ivar, mask on the 7781 grid).

    A file with a FIBERMAP gives its target fibres (TARGETID > 0, OBJTYPE 'TGT' where the
    column exists); a file of bare arms gives every fibre. Spectra with under half their pixels
    valid (a dead or unassigned fibre) are dropped. Raises FormatError when nothing is left.
    """
    import fitsio

    ivars, masks, sources = [], [], []
    for path in map(_existing, paths):
        with fitsio.FITS(str(path)) as fits:
            has_fibermap = "FIBERMAP" in fits
        if has_fibermap:
            arrays = read_coadd_arrays(path)
            keep = arrays.targetid > 0
            if "objtype" in arrays.fibermap.column_names:
                keep &= np.asarray(arrays.fibermap.column("objtype").to_pylist()) == "TGT"
            ivar, mask = arrays.ivar[keep], arrays.mask[keep]
            rows = np.flatnonzero(keep)
        else:
            ivar, mask = _arms_only(path)
            rows = np.arange(len(ivar))
        valid = ((ivar > 0) & (mask == 0)).mean(axis=1)  # (n,)
        good = valid >= MIN_VALID_FRACTION
        ivars.append(ivar[good])
        masks.append(mask[good])
        sources += [f"{path.name}:{r}" for r in rows[good]]
    if not sources:
        raise FormatError(", ".join(map(str, paths)), "no spectrum usable as a noise model")
    return NoisePool(
        np.concatenate(ivars).astype(np.float32), np.concatenate(masks), tuple(sources)
    )


# ---- simulation ----


def redshift_template(
    template: RestTemplate, z: float, wave_angstrom: np.ndarray = WAVELENGTH
) -> tuple[np.ndarray, np.ndarray]:
    """The template at redshift ``z`` on the pixel centres ``wave_angstrom`` (L,), even steps.

    Returns (flux (L,), covered (L,) bool). Each pixel's flux is the mean of f(λ/(1+z)) over
    the pixel (integral of the template's linear interpolation, so flux is conserved and
    features land at λ_rest (1+z)); ``covered`` is False where the pixel reaches outside the
    template's rest coverage (its flux is then 0). The (1+z) dimming is left out: the caller
    scales the spectrum to a magnitude.
    """
    wave = np.asarray(wave_angstrom, dtype=np.float64)
    step = np.diff(wave)
    edges = np.concatenate(
        [[wave[0] - step[0] / 2], wave[:-1] + step / 2, [wave[-1] + step[-1] / 2]]
    )
    rest_edges = edges / (1.0 + z)  # (L + 1,)
    w, f = template.wave_angstrom, template.flux
    # Cumulative integral of the piecewise-linear template (trapezoids), then its
    # interpolation at the edges: exact for a piecewise-linear f.
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(w))])
    at = np.interp(rest_edges, w, cum)
    flux = np.diff(at) / np.diff(rest_edges)
    covered = (rest_edges[:-1] >= w[0]) & (rest_edges[1:] <= w[-1])
    return np.where(covered, flux, 0.0), covered


def ab_magnitude(
    flux: np.ndarray,
    wave_angstrom: np.ndarray = WAVELENGTH,
    window_angstrom: tuple[float, float] = NORM_WINDOW_ANGSTROM,
) -> float:
    """AB magnitude of a spectrum (1e-17 erg/s/cm2/A) through a top-hat band ``window``.

    Photon-counting band mean: <f_nu> = ∫ f_lambda λ dλ / (c ∫ dλ/λ).
    """
    wave = np.asarray(wave_angstrom, dtype=np.float64)
    inside = (wave >= window_angstrom[0]) & (wave <= window_angstrom[1])
    if not inside.any():
        raise ValueError(f"window {window_angstrom} A lies outside the spectrum's wavelengths")
    f_lambda = np.asarray(flux, dtype=np.float64)[inside] * FLUX_UNIT_CGS
    lam = wave[inside]
    f_nu = np.sum(f_lambda * lam) / (C_ANGSTROM_PER_S * np.sum(1.0 / lam))
    if f_nu <= 0:
        raise ValueError(f"mean flux in {window_angstrom} A is not positive: no magnitude")
    return float(-2.5 * np.log10(f_nu) - AB_ZEROPOINT)


def _draw_noise_rows(pool: NoisePool, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) pool rows: a file uniformly, then one of its rows, so that the 25 fibres of one
    tile do not outweigh the other files."""
    files = np.array([s.rsplit(":", 1)[0] for s in pool.source])
    names = np.unique(files)
    chosen = names[rng.integers(0, len(names), n)]
    return np.array([rng.choice(np.flatnonzero(files == f)) for f in chosen], dtype=np.int64)


def _scaled(
    template: RestTemplate, z: float, clean: np.ndarray, config: TransferConfig
) -> np.ndarray:
    """``clean`` (the template at ``z``) scaled to the config's magnitude at ``z``.

    Fixed mode: the window's magnitude is ``z_fiber_mag``. Luminosity mode: the template is
    first scaled so that at ``z_ref`` its window magnitude is ``z_fiber_mag``; the same scale
    then applies at every z, moved by :meth:`TransferConfig.target_magnitude`'s distance term.
    """
    if config.magnitude_mode == "fixed":
        return clean * 10 ** (-0.4 * (config.z_fiber_mag - ab_magnitude(clean)))
    ref, _ = redshift_template(template, config.z_ref)
    scale = 10 ** (-0.4 * (config.z_fiber_mag - ab_magnitude(ref)))  # same for every z
    return clean * scale * 10 ** (-0.4 * (config.target_magnitude(z) - config.z_fiber_mag))


def simulate_spectra(
    template: RestTemplate, pool: NoisePool, config: TransferConfig
) -> SimulatedSpectra:
    """``config.n_draws`` noisy copies of ``template`` at each of ``config.redshifts``.

    Each copy takes the ivar and mask of a pool row drawn at random (seeded by ``config.seed``)
    and Gaussian noise of sigma = 1/sqrt(ivar); see the module docstring. Raises ValueError
    when the normalisation window is not covered at some redshift.
    """
    rng = np.random.default_rng(config.seed)
    n = len(config.redshifts) * config.n_draws
    flux = np.zeros((n, N_WAVELENGTH), np.float32)
    ivar = np.zeros((n, N_WAVELENGTH), np.float32)
    mask = np.zeros((n, N_WAVELENGTH), np.uint32)
    z_true = np.repeat(np.asarray(config.redshifts, np.float64), config.n_draws)
    noise_row = _draw_noise_rows(pool, n, rng)
    for i, z in enumerate(config.redshifts):
        clean, covered = redshift_template(template, z)
        window = (NORM_WINDOW_ANGSTROM[0] <= WAVELENGTH) & (NORM_WINDOW_ANGSTROM[1] >= WAVELENGTH)
        if not covered[window].all():
            raise ValueError(
                f"z={z}: the template ({template.name}, rest {template.wave_angstrom[0]:.0f}-"
                f"{template.wave_angstrom[-1]:.0f} A) does not cover the normalisation window "
                f"{NORM_WINDOW_ANGSTROM} A observed"
            )
        clean = _scaled(template, z, clean, config)
        for j in range(i * config.n_draws, (i + 1) * config.n_draws):
            real_ivar, real_mask = pool.ivar[noise_row[j]], pool.mask[noise_row[j]]
            good = covered & (real_ivar > 0)  # (7781,)
            sigma = np.where(good, 1.0 / np.sqrt(np.where(good, real_ivar, 1.0)), 0.0)
            flux[j] = np.where(good, clean + sigma * rng.standard_normal(N_WAVELENGTH), 0.0)
            ivar[j] = np.where(good, real_ivar, 0.0)
            mask[j] = np.where(covered, real_mask, real_mask | MASK_NODATA)
    return SimulatedSpectra(flux, ivar, mask, z_true, noise_row)


# ---- prediction and metrics ----


def predict_redshifts(
    query_emb: np.ndarray, bank_emb: np.ndarray, bank_z: np.ndarray, k: int = DEFAULT_K
) -> np.ndarray:
    """(Q,) k-NN redshifts of (Q, D) query embeddings against an (N, D) bank with (N,) z,
    as the evaluation does (L2-normalised rows, 1/distance weights, k capped at N)."""
    query = l2_normalise(query_emb, "transfer queries")
    bank = l2_normalise(bank_emb, "transfer bank")
    return knn_regress(query, bank, np.asarray(bank_z, np.float64), k=min(k, len(bank)))


def transfer_metrics(
    name: str,
    z_true: np.ndarray,
    z_pred: np.ndarray,
    z_fiber_mag: float,
    bank_z: np.ndarray,
    noise_sources: tuple[str, ...] = (),
    magnitude_mode: str = "fixed",
) -> TransferResult:
    """The overall and per-redshift figures of predictions ``z_pred`` for ``z_true``."""
    z_true = np.asarray(z_true, np.float64)
    z_pred = np.asarray(z_pred, np.float64)
    x = normalised_redshift_error(z_true, z_pred)
    rows = []
    for z in np.unique(z_true):
        at = z_true == z
        rows.append(
            PerRedshift(
                z=float(z),
                median_pred=float(np.median(z_pred[at])),
                sigma_nmad=sigma_nmad(x[at]),
                outlier_fraction=float(np.mean(np.abs(x[at]) > OUTLIER_THRESHOLD)),
                n=int(at.sum()),
            )
        )
    return TransferResult(
        name=name,
        metrics=redshift_metrics(z_true, z_pred),
        per_z=tuple(rows),
        z_true=z_true,
        z_pred=z_pred,
        z_fiber_mag=z_fiber_mag,
        magnitude_mode=magnitude_mode,
        n_bank=int(len(bank_z)),
        bank_z_range=(float(np.min(bank_z)), float(np.max(bank_z))),
        noise_sources=noise_sources,
    )


def train_bank(embeddings) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) spectrum embeddings and (N,) z of the ``split == 'train'`` rows of an embeddings
    table (:mod:`astroclip_core.tables.embeddings`); ValueError when it has none."""
    from astroclip_core.tables.embeddings import embedding_matrix

    split = np.asarray(embeddings.column("split").to_pylist(), dtype=object)
    train = split == "train"
    if not train.any():
        raise ValueError(f"the embeddings table has no train rows (splits: {sorted(set(split))})")
    z = embeddings.column("z").to_numpy(zero_copy_only=False).astype(np.float64)
    emb = embedding_matrix(embeddings.filter(train), "spectrum_embedding")
    keep = np.isfinite(z[train])
    return emb[keep], z[train][keep]


def transfer_check(
    model,
    bank_emb: np.ndarray,
    bank_z: np.ndarray,
    config: TransferConfig = TransferConfig(),
    template: RestTemplate | None = None,
    pool: NoisePool | None = None,
    name: str = "lrg_stack",
    device: str = "cpu",
) -> TransferResult:
    """Simulate the template at ``config.redshifts``, embed with ``model``'s spectrum encoder
    (:func:`astroclip_core.embed.embed_spectra`, the normalisation of training) and predict z
    by k-NN against the bank. Defaults: the LRG stack and the real-coadd noise pool."""
    from astroclip_core.embed import embed_spectra

    template = template if template is not None else read_rest_template()
    pool = pool if pool is not None else read_noise_pool()
    sims = simulate_spectra(template, pool, config)
    emb = embed_spectra(model, sims.flux, sims.ivar, sims.mask, device=device, name=name)
    z_pred = predict_redshifts(emb, bank_emb, bank_z, config.k)
    return transfer_metrics(
        name, sims.z, z_pred, config.z_fiber_mag, bank_z,
        tuple(pool.source[i] for i in sims.noise_row), config.magnitude_mode,
    )  # fmt: skip


def transfer_check_release(
    layout,
    release: str,
    model_name: str,
    config: TransferConfig = TransferConfig(),
    template: RestTemplate | None = None,
) -> TransferResult:
    """The check for the model ``model_name`` of ``release`` under a data root (a
    :class:`~astroclip_core.storage.StorageLayout`): its model folder and its embeddings
    table's train split as the bank. This is the one call an evaluation step needs.
    ``template`` replaces the LRG stack (see :func:`tilted_template`)."""
    from astroclip_core.model.pretrained import load_pretrained
    from astroclip_core.tables.embeddings import read_embeddings

    model = load_pretrained(layout.model_dir(release, model_name))
    table = read_embeddings(
        layout.embeddings_dir(release, model_name), ["split", "z", "spectrum_embedding"]
    )
    bank_emb, bank_z = train_bank(table)
    return transfer_check(model, bank_emb, bank_z, config, template)


def tilted_template(template: RestTemplate, index: float, pivot_angstrom: float = 5000.0):
    """``template`` times (lambda_rest / ``pivot_angstrom``)^``index``: the same features on a
    redder (index > 0) or bluer continuum, to ask how much a model's redshift leans on the
    continuum slope."""
    flux = template.flux * (template.wave_angstrom / pivot_angstrom) ** index
    return RestTemplate(f"{template.name} x (lambda/{pivot_angstrom:g})^{index:g}",
                        template.wave_angstrom, flux)  # fmt: skip
