"""The per-arm noise shape of DESI coadds, derived from real inverse variances.

A DESI coadd's per-pixel sigma is, up to an overall level, the same in every spectrum of a
petal: it rises steeply at the blue end of each arm and inside the dichroic overlaps (the
throughput falls), and it has a spike at each bright sky line (their photon noise). We derive
that shape from the real files in ``tests/data/desi`` (25 everest SV1 spectra, 2 fuji SV3 dark
targets, 5 SV1 quasars): per spectrum, sigma = 1/sqrt(ivar) divided by its median in the arm;
per file, the median over its spectra; then the median over the three files (so a feature of
one petal, like a CCD defect, drops out). That shape is split into

- a smooth part (a 61-pixel running median, lightly smoothed), kept at knots (denser at the arm
  ends, where it changes fast) and interpolated in log;
- sky lines: Gaussians at the peaks of the excess variance ``sigma^2 - smooth^2``, with
  amplitudes from a non-negative least-squares fit, in units of the smooth variance there.

:func:`derive_noise_shape` does the derivation; the result is shipped as the table module
``desi_noise_table.py`` (regenerate it with ``python -m astroclip_core.samplesky.noisemodel
tests/data/desi``), and a test checks that the table still matches the real files. The sample
sky uses it with per-spectrum variations (tilt, sky brightness, line strengths) in spectra.py.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np
from scipy.ndimage import median_filter, uniform_filter1d
from scipy.optimize import nnls
from scipy.signal import find_peaks

from astroclip_core.formats.desi import ARMS, arm_wavelength

# Real files and the rows that hold a spectrum (None: every row with ivar).
REAL_NOISE_FILES: tuple[tuple[str, tuple[int, ...] | None], ...] = (
    ("everest-80605-0-first25-arms.fits", None),
    ("coadd-sv3-dark-26065.fits", (2, 4)),  # the two targets (rows 0-1 are empty, 3 is sky)
    ("coadd-1-80693-thru20210204.fits", None),
)
SMOOTH_WINDOW_PIX = 61
SKY_LINE_SIGMA_ANGSTROM = 0.8  # width of a sky line's variance spike in a coadd (LSF + pixels)
SKY_LINE_MIN_EXCESS = 0.25  # a peak of excess variance / smooth variance above this is a line
KNOT_STEP_PIX, END_STEP_PIX, END_PIX = 25, 5, 100


@dataclass(frozen=True)
class ArmNoiseShape:
    """Sigma shape of one arm, relative (median ~1).

    ``knot_wavelength_angstrom``/``knot_sigma``: the smooth sigma at knots (interpolate in log).
    ``line_wavelength_angstrom``/``line_excess``: sky-line Gaussians (sigma
    :data:`SKY_LINE_SIGMA_ANGSTROM`) of variance in units of the smooth variance.
    """

    knot_wavelength_angstrom: np.ndarray
    knot_sigma: np.ndarray
    line_wavelength_angstrom: np.ndarray
    line_excess: np.ndarray

    def smooth_sigma(self, wave: np.ndarray) -> np.ndarray:
        """(npix,) smooth relative sigma on ``wave``."""
        return np.exp(np.interp(wave, self.knot_wavelength_angstrom, np.log(self.knot_sigma)))

    def line_profiles(self, wave: np.ndarray) -> np.ndarray:
        """(n_lines, npix) unit-amplitude Gaussian profile of each sky line on ``wave``."""
        d = (wave[None, :] - self.line_wavelength_angstrom[:, None]) / SKY_LINE_SIGMA_ANGSTROM
        return np.exp(-0.5 * d**2)

    def sigma(self, wave: np.ndarray) -> np.ndarray:
        """(npix,) relative sigma, smooth part and lines together."""
        smooth = self.smooth_sigma(wave)
        excess = self.line_excess @ self.line_profiles(wave)
        return smooth * np.sqrt(1.0 + excess)


def real_sigma_shape(folder: Path, arm: str) -> np.ndarray:
    """(npix,) median relative sigma of ``arm`` over the real files (see the module doc)."""
    per_file = []
    for name, rows in REAL_NOISE_FILES:
        path = Path(folder) / name
        if not path.exists():
            raise FileNotFoundError(f"real DESI noise file {path} is missing")
        ivar = fitsio.read(str(path), f"{arm}_IVAR").astype(np.float64)
        if rows is not None:
            ivar = ivar[list(rows)]
        ivar = ivar[(ivar > 0).mean(axis=1) > 0.5]  # (n_spectra, npix) with data
        safe = np.where(ivar > 0, ivar, 1.0)
        sig = np.where(ivar > 0, 1.0 / np.sqrt(safe), np.nan)
        sig /= np.nanmedian(sig, axis=1, keepdims=True)
        per_file.append(np.nanmedian(sig, axis=0))
    shape = np.nanmedian(np.array(per_file), axis=0)
    return np.where(np.isfinite(shape), shape, np.nanmedian(shape))


def derive_noise_shape(folder: Path) -> dict[str, ArmNoiseShape]:
    """Per arm: the smooth + sky-line noise shape of the real coadds in ``folder``."""
    out = {}
    for arm in ARMS:
        wave = arm_wavelength(arm)
        shape = real_sigma_shape(folder, arm)
        smooth = uniform_filter1d(
            median_filter(shape, SMOOTH_WINDOW_PIX, mode="nearest"), 15, mode="nearest"
        )
        n = wave.size
        knots = np.unique(
            np.r_[
                np.arange(0, END_PIX, END_STEP_PIX),
                np.arange(END_PIX, n - END_PIX, KNOT_STEP_PIX),
                np.arange(n - END_PIX, n, END_STEP_PIX),
                n - 1,
            ]
        )
        # The ends of an arm rise over a few pixels: take the knots from the shape itself there.
        knot_sigma = np.where(
            (knots < 15) | (knots > n - 16),
            median_filter(shape, 5, mode="nearest")[knots],
            smooth[knots],
        )
        arm_shape = ArmNoiseShape(wave[knots], knot_sigma, np.zeros(0), np.zeros(0))
        smooth_model = arm_shape.smooth_sigma(wave)
        excess = np.clip(shape**2 - smooth_model**2, 0.0, None) / smooth_model**2
        peaks, _ = find_peaks(excess, height=SKY_LINE_MIN_EXCESS, distance=2)
        peaks = peaks[(peaks > 3) & (peaks < n - 4)]  # the arm ends are in the smooth part
        # Sub-pixel centres from a parabola through each peak and its neighbours.
        left, mid, right = excess[peaks - 1], excess[peaks], excess[peaks + 1]
        denom = np.where(left - 2 * mid + right == 0, -1e-9, left - 2 * mid + right)
        centre = wave[peaks] + 0.5 * (left - right) / denom * (wave[1] - wave[0])
        profiles = ArmNoiseShape(wave[:1], np.ones(1), centre, np.zeros(centre.size))
        design = profiles.line_profiles(wave).T  # (npix, n_lines)
        amps, _ = nnls(design, excess)
        keep = amps > 0.05
        out[arm] = ArmNoiseShape(wave[knots], knot_sigma, centre[keep], amps[keep])
    return out


def write_table(shapes: dict[str, ArmNoiseShape], path: Path) -> None:
    """Write ``shapes`` as the Python table module at ``path`` (atomically)."""
    lines = [
        '"""DESI coadd noise shape per arm, generated by samplesky/noisemodel.py from the real',
        'files in tests/data/desi (do not edit by hand)."""',
        "",
        "# arm: (knot wavelengths A, knot relative sigma, sky-line wavelengths A, line excess)",
        "NOISE_TABLE: dict[str, tuple[tuple[float, ...], ...]] = {",
    ]
    for arm, s in shapes.items():
        lines.append(f'    "{arm}": (')
        for arr, fmt in (
            (s.knot_wavelength_angstrom, "{:.1f}"),
            (s.knot_sigma, "{:.4f}"),
            (s.line_wavelength_angstrom, "{:.2f}"),
            (s.line_excess, "{:.3f}"),
        ):
            values = [fmt.format(v) for v in arr]
            lines.append("        (")
            for i in range(0, len(values), 8):
                lines.append("            " + ", ".join(values[i : i + 8]) + ",")
            lines.append("        ),")
        lines.append("    ),")
    lines.append("}")
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def shipped_noise_shape() -> dict[str, ArmNoiseShape]:
    """The noise shape from the shipped table module (no real files needed)."""
    from astroclip_core.samplesky.desi_noise_table import NOISE_TABLE

    return {
        arm: ArmNoiseShape(*(np.array(v, dtype=np.float64) for v in NOISE_TABLE[arm]))
        for arm in ARMS
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m astroclip_core.samplesky.noisemodel <real-desi-dir>")
    write_table(
        derive_noise_shape(Path(sys.argv[1])), Path(__file__).parent / "desi_noise_table.py"
    )
