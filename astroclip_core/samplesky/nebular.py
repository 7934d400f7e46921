"""Nebular emission lines of sample-sky galaxies: BPT line ratios, Balmer decrement, dust, EWs.

Each galaxy's lines are a mix of two components, each with its own set of intrinsic (dust-free)
line ratios relative to H alpha:

- **Star formation (H II regions).** The [N II] 6584/H alpha ratio ``x`` rises with stellar mass
  (the mass-metallicity relation) and falls with redshift; [O III] 5007/H beta ``y`` follows a
  ridge 0.3 dex below the Kauffmann et al. (2003, MNRAS 346, 1055) demarcation
  ``y = 0.61/(x - 0.05) + 1.3``, i.e. ``y = 0.61/(x - 0.05) + 1.0``, which traces the SDSS
  star-forming sequence, raised by 0.15 dex per unit redshift (the offset of z ~ 1-2 galaxies,
  Kewley et al. 2013, ApJ 774, L10; Shapley et al. 2015, ApJ 801, 88), with 0.1 dex scatter.
- **AGN.** Seyfert-like (``x ~ 0.0``, ``y ~ 0.85``) or LINER-like (``x ~ 0.1``, ``y ~ 0.05``)
  ratios, the two branches of Kewley et al. (2006, MNRAS 372, 961). Blue galaxies host one with a
  probability rising with stellar mass (2 % below 10^10 Msun to 17 % above 10^11, after the AGN
  fractions of Kauffmann et al. 2003) and a share of H alpha drawn uniformly in 0.2-1, so
  composites fill the region between the Kauffmann (2003) and Kewley et al. (2001, ApJ 556, 121)
  lines. Passive (red) galaxies have weak LINER-like emission only (Yan et al. 2006, ApJ 648, 281).

Balmer lines are case B at 10^4 K (Osterbrock & Ferland 2006): H alpha/H beta = 2.86,
H gamma/H beta = 0.468, H delta/H beta = 0.259; 3.1 for the AGN narrow-line region. Doublet
ratios: [O III] 5007/4959 = 2.98 and [N II] 6584/6548 = 3.05 (Storey & Zeippen 2000);
[O II] 3729/3726 and [S II] 6716/6731 drawn in 1.2-1.5 and 1.2-1.45 (low-density limit).

Dust: the lines are reddened with the Cardelli, Clayton & Mathis (1989) curve (R_V = 3.1) and a
nebular attenuation tied to stellar mass, A(H alpha) = 0.91 + 0.77 X + 0.11 X^2 - 0.09 X^3 with
X = log10(M*/1e10 Msun) (Garn & Best 2010, MNRAS 409, 421), 0.3 mag scatter, floored at 0;
halved for ELGs (their blue g-r colour cut removes the dustiest galaxies of a given mass; our
choice) and 0.5 mag for the weak gas of passive galaxies (our choice). The
kcorrect continua are empirical fits to real galaxies and already carry their typical stellar
attenuation, so only the lines are reddened here.

Strength: the observed rest-frame equivalent width of H alpha (after dust) is log-normal,
0.3 dex wide, with a median of 25 A for star-forming BGS-like galaxies (the SDSS star-forming
main sample, e.g. Brinchmann et al. 2004, MNRAS 351, 1151), 110 A for ELGs (bright [O II]
emitters at z ~ 1; it gives a median rest EW([O II]) of about 30 A, as in DEEP2 blue galaxies,
Weiner et al. 2007, ApJ 660, L39) and 1 A for passive galaxies; it scales as sSFR^0.4 at fixed
class. These numbers are order-of-magnitude matches to the literature, not fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astroclip_core.samplesky.templates import NEBULAR_LINES

R_V = 3.1
BALMER_CASE_B = {"Halpha": 2.86, "Hgamma": 0.468, "Hdelta": 0.259}  # relative to H beta
HALPHA_HBETA_AGN = 3.1
O3_DOUBLET = 2.98  # [O III] 5007 / 4959
N2_DOUBLET = 3.05  # [N II] 6584 / 6548
# Median observed H alpha rest EW (A) per class, and the log-normal width (dex).
EW_HALPHA_MEDIAN_ANGSTROM = {"blue": 25.0, "ELG": 110.0, "red": 1.0}
EW_HALPHA_SCATTER_DEX = 0.3
EW_SSFR_SLOPE = 0.4  # d log EW / d log sSFR at fixed class
LOG_SSFR_REFERENCE = -10.4  # the kcorrect sSFR (1/yr) of a median blue galaxy here
A_HALPHA_SCATTER_MAG = 0.3
A_HALPHA_PASSIVE_MAG = 0.5  # median A(H alpha) of the weak LINER-like gas of passive galaxies
ELG_DUST_FACTOR = 0.5  # ELG colour cuts (blue g-r) keep the less dusty galaxies of a mass


@dataclass(frozen=True)
class NebularParams:
    """Per-galaxy line parameters, all (N,).

    ``log_n2_ha``, ``log_o3_hb``, ``log_s2_ha`` ([S II] 6716+6731 / H alpha), ``log_o2_hb``
    ([O II] 3726+3729 / H beta): intrinsic (dust-free) log ratios of the mixed components.
    ``ebv_gas``: nebular E(B-V) (mag). ``ew_halpha_angstrom``: observed rest EW of H alpha.
    ``agn_fraction``: share of the intrinsic H alpha from the AGN component.
    """

    log_n2_ha: np.ndarray
    log_o3_hb: np.ndarray
    log_s2_ha: np.ndarray
    log_o2_hb: np.ndarray
    ebv_gas: np.ndarray
    ew_halpha_angstrom: np.ndarray
    agn_fraction: np.ndarray


def cardelli_k(wavelength_angstrom: np.ndarray) -> np.ndarray:
    """k(lambda) = A_lambda / E(B-V) of Cardelli, Clayton & Mathis (1989), optical branch."""
    x = 1e4 / np.asarray(wavelength_angstrom, dtype=np.float64)  # inverse microns
    if np.any((x < 1.1) | (x > 3.3)):
        raise ValueError("cardelli_k covers 3030-9090 A only")
    y = x - 1.82
    a = np.polyval([0.32999, -0.77530, 0.01979, 0.72085, -0.02427, -0.50447, 0.17699, 1.0], y)
    b = np.polyval([-2.09002, 5.30260, -0.62251, -5.38434, 1.07233, 2.28305, 1.41338, 0.0], y)
    return a * R_V + b


def _component_ratios(
    x: np.ndarray, y: np.ndarray, s: np.ndarray, o2: np.ndarray, o1: np.ndarray, ha_hb: float
) -> np.ndarray:
    """(N, n_lines) intrinsic line fluxes per unit H alpha from log ratios of one component."""
    out = np.zeros((x.size, len(NEBULAR_LINES)))
    hb = 1.0 / ha_hb
    col = {name: k for k, (name, _) in enumerate(NEBULAR_LINES)}
    o3 = hb * 10**y
    o2_total = hb * 10**o2
    out[:, col["Halpha"]] = 1.0
    out[:, col["Hbeta"]] = hb
    out[:, col["Hgamma"]] = hb * BALMER_CASE_B["Hgamma"]
    out[:, col["Hdelta"]] = hb * BALMER_CASE_B["Hdelta"]
    out[:, col["[O III]5008"]] = o3
    out[:, col["[O III]4960"]] = o3 / O3_DOUBLET
    out[:, col["[N II]6585"]] = 10**x
    out[:, col["[N II]6550"]] = 10**x / N2_DOUBLET
    out[:, col["[O I]6302"]] = 10**o1
    out[:, col["[Ne III]3870"]] = o3 * 10**-1.15  # Ne III / O III ~ 0.07 (tracks ionisation)
    out[:, col["[S II]6718"]] = 10**s  # split by the doublet ratio in _split_doublets
    out[:, col["[O II]3729"]] = o2_total  # idem
    return out


def _split_doublets(rng: np.random.Generator, lines: np.ndarray) -> None:
    """Share the [S II] and [O II] totals (stored in one member) by a low-density ratio."""
    col = {name: k for k, (name, _) in enumerate(NEBULAR_LINES)}
    n = lines.shape[0]
    r_s2 = rng.uniform(1.2, 1.45, n)  # 6716/6731
    r_o2 = rng.uniform(1.2, 1.5, n)  # 3729/3726
    s2, o2 = lines[:, col["[S II]6718"]].copy(), lines[:, col["[O II]3729"]].copy()
    lines[:, col["[S II]6718"]], lines[:, col["[S II]6733"]] = (
        s2 * r_s2 / (1 + r_s2),
        s2 / (1 + r_s2),
    )
    lines[:, col["[O II]3729"]], lines[:, col["[O II]3727"]] = (
        o2 * r_o2 / (1 + r_o2),
        o2 / (1 + r_o2),
    )


def draw_nebular(
    rng: np.random.Generator,
    z: np.ndarray,
    log_mstar: np.ndarray,
    log_ssfr: np.ndarray,
    is_red: np.ndarray,
    tracer: np.ndarray,
) -> tuple[NebularParams, np.ndarray]:
    """Draw line parameters; return them and the (N, n_lines) observed (reddened) line fluxes
    per unit rest-frame H alpha continuum (i.e. in A of equivalent width)."""
    n = z.size
    # Star-forming component.
    x_sf = np.clip(
        -0.45 + 0.30 * (log_mstar - 10.5) - 0.1 * z + rng.normal(0, 0.08, n), -1.6, -0.25
    )
    y_sf = 0.61 / (x_sf - 0.05) + 1.0 + 0.15 * z + rng.normal(0, 0.1, n)
    s_sf = -0.42 + 0.35 * (x_sf + 0.45) + rng.normal(0, 0.08, n)
    o2_sf = np.clip(0.25 - 0.45 * (x_sf + 0.45) + rng.normal(0, 0.1, n), -0.3, 0.7)
    o1_sf = -1.6 + rng.normal(0, 0.15, n)
    sf = _component_ratios(x_sf, y_sf, s_sf, o2_sf, o1_sf, BALMER_CASE_B["Halpha"])
    # AGN component: Seyfert-like or LINER-like; passive galaxies are always LINER-like.
    seyfert = (rng.uniform(size=n) < 0.5) & ~is_red
    x_agn = np.where(seyfert, rng.normal(0.0, 0.15, n), rng.normal(0.1, 0.12, n))
    y_agn = np.where(seyfert, rng.normal(0.85, 0.15, n), rng.normal(0.05, 0.15, n))
    s_agn = np.where(seyfert, rng.normal(-0.2, 0.12, n), rng.normal(0.0, 0.1, n))
    o2_agn = np.where(seyfert, rng.normal(0.45, 0.15, n), rng.normal(0.65, 0.15, n))
    o1_agn = np.where(seyfert, rng.normal(-1.0, 0.15, n), rng.normal(-0.8, 0.15, n))
    agn = _component_ratios(x_agn, y_agn, s_agn, o2_agn, o1_agn, HALPHA_HBETA_AGN)
    p_agn = 0.02 + 0.15 * np.clip(log_mstar - 10.0, 0.0, 1.0)
    has_agn = rng.uniform(size=n) < p_agn
    f_agn = np.where(is_red, 1.0, np.where(has_agn, rng.uniform(0.2, 1.0, n), 0.0))
    intrinsic = (1 - f_agn)[:, None] * sf + f_agn[:, None] * agn  # (N, n_lines) per H alpha
    _split_doublets(rng, intrinsic)

    # Dust (nebular E(B-V) from the Garn & Best 2010 A(H alpha)-mass relation).
    mass_x = np.clip(log_mstar - 10.0, -1.5, 1.5)
    a_halpha = 0.91 + 0.77 * mass_x + 0.11 * mass_x**2 - 0.09 * mass_x**3
    a_halpha = np.where(is_red, A_HALPHA_PASSIVE_MAG, a_halpha)
    a_halpha = np.where(tracer == "ELG", ELG_DUST_FACTOR * a_halpha, a_halpha)
    a_halpha = np.clip(a_halpha + rng.normal(0, A_HALPHA_SCATTER_MAG, n), 0.0, None)
    wave = np.array([lam for _, lam in NEBULAR_LINES])
    k = cardelli_k(wave)  # (n_lines,)
    k_ha = float(cardelli_k(np.array([6564.61]))[0])
    ebv = a_halpha / k_ha
    # Reddened relative to H alpha: the H alpha EW is the observed one.
    observed = intrinsic * 10 ** (-0.4 * ebv[:, None] * (k - k_ha)[None, :])

    # Observed H alpha EW (rest frame, A).
    median = np.where(
        is_red,
        EW_HALPHA_MEDIAN_ANGSTROM["red"],
        np.where(
            tracer == "ELG", EW_HALPHA_MEDIAN_ANGSTROM["ELG"], EW_HALPHA_MEDIAN_ANGSTROM["blue"]
        ),
    )
    slope = np.where(is_red, 0.0, EW_SSFR_SLOPE)
    log_ew = (
        np.log10(median)
        + slope * np.clip(log_ssfr - LOG_SSFR_REFERENCE, -1.5, 1.5)
        + rng.normal(0, EW_HALPHA_SCATTER_DEX, n)
    )
    ew = 10**log_ew
    col = {name: j for j, (name, _) in enumerate(NEBULAR_LINES)}
    params = NebularParams(
        log_n2_ha=np.log10(intrinsic[:, col["[N II]6585"]] / intrinsic[:, col["Halpha"]]),
        log_o3_hb=np.log10(intrinsic[:, col["[O III]5008"]] / intrinsic[:, col["Hbeta"]]),
        log_s2_ha=np.log10(
            (intrinsic[:, col["[S II]6718"]] + intrinsic[:, col["[S II]6733"]])
            / intrinsic[:, col["Halpha"]]
        ),
        log_o2_hb=np.log10(
            (intrinsic[:, col["[O II]3727"]] + intrinsic[:, col["[O II]3729"]])
            / intrinsic[:, col["Hbeta"]]
        ),
        ebv_gas=ebv,
        ew_halpha_angstrom=ew,
        agn_fraction=f_agn,
    )
    return params, observed * ew[:, None]
