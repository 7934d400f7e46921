"""Generate the sample sky on disk, in the real DESI and Legacy Surveys layouts.

Under ``root``::

    public/<release>/spectro/redux/<specprod>/...      DESI tree (layout.coadd_path & co.)
    render/coadds-<release>.parquet                    coadd files the server renders on request
    cfs/cosmo/data/legacysurvey/dr9/<north|south>/sweep/9.0/sweep-*.fits
    truth/<release>.parquet                            true properties and imaging match
    samplesky.json                                     the config (read by the server)

The sweeps always cover the union of every configured release's footprint, so generating
any release writes the same sweep bytes and never changes another release's files.

The coadd files are not written by default (they are ~97% of the sky's bytes: 1.6 GB of the
default sky): each is listed in ``render/coadds-<release>.parquet`` with its size and CRC-32,
and the server draws it on request from the same seeded generator, byte for byte what
``generate(..., coadd_files=True)`` writes (:mod:`astroclip_core.samplesky.lazy`).
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import get_type_hints

import fitsio
import numpy as np
import pyarrow as pa

from astroclip_core.formats._fits import build_records, write_fits_atomic
from astroclip_core.formats.desi import ZCATALOG_COLUMNS, write_coadd, write_redrock, write_zcatalog
from astroclip_core.formats.legacysurvey import write_sweep
from astroclip_core.fsio import atomic_write_bytes, atomic_write_parquet, scratch_dir
from astroclip_core.samplesky.assemble import build_pixel_sky
from astroclip_core.samplesky.catalogs import (
    ObservationRows,
    fibermap_columns,
    fiberstatus_of,
    observation_rows,
    redshift_columns,
    sweep_columns,
)
from astroclip_core.samplesky.config import DecoyRates, ReleaseFootprint, SampleSkyConfig
from astroclip_core.samplesky.ids import source_key
from astroclip_core.samplesky.sky import STRUCTURE_FIELDS, PixelSky
from astroclip_core.samplesky.spectra import model_spectrum, observe
from astroclip_core.sources import layout

MANIFEST_NAME = "samplesky.json"
# Bump when the generator writes different data for the same config, so that a sky written by
# older code is not silently reused (3: spectral noise calibrated on the real EDR coadd;
# 4: galaxy sizes, disc structure and DR9 depths and seeing of issue 16).
GENERATOR_VERSION = 4
TILEPIX_COLUMNS = {"HEALPIX": ">i4", "SURVEY": "S7", "PROGRAM": "S6", "TILEID": ">i4"}
GALAXY_KINDS = ("galaxy", "zwarn", "low_deltachi2", "bad_fiberstatus")


@dataclass(frozen=True)
class ReleaseSummary:
    """What was written for one release."""

    release: str
    n_pixels: int
    n_spectra: int
    n_targets: int
    n_clean_galaxies: int
    n_coadd_files: int


@dataclass(frozen=True)
class GenerationSummary:
    """Result of :func:`generate`."""

    root: str
    releases: tuple[ReleaseSummary, ...]
    n_sweep_sources: int
    seconds: float


def desi_root(root: Path) -> Path:
    """The folder served at ``/public/``."""
    return root / layout.SAMPLESKY_DESI_PREFIX


def legacysurvey_root(root: Path) -> Path:
    """The folder served at ``/cfs/cosmo/data/legacysurvey/dr9/``."""
    return root / layout.SAMPLESKY_LEGACYSURVEY_PREFIX


def truth_path(root: Path, release: str) -> Path:
    """``<root>/truth/<release>.parquet``."""
    return root / "truth" / f"{release}.parquet"


def bulges_path(root: Path) -> Path:
    """``<root>/render/bulges.parquet``: the bulge of each imaging source that has one.

    Not served: a sweep row describes a source by one smooth profile, as Tractor does, so the
    cutout renderer reads the bulge/disc split and the disc structure from here. Columns:
    brickid, objid (the sweep key), bulge_flux_g/r/z (observed nanomaggies, part of the
    sweep's true flux), bulge_r_arcsec, knot_flux_g/r/z (observed nanomaggies, also part of
    it) and the other sky.STRUCTURE_FIELDS (population.Galaxies documents them).
    """
    return root / "render" / "bulges.parquet"


def write_bulges(root: Path, skies: dict[int, PixelSky]) -> None:
    """Write :func:`bulges_path` for every source of ``skies`` with a bulge, sorted by key."""
    parts = []
    for pixel in sorted(skies):
        src = skies[pixel].sources
        has = src.bulge_r_arcsec > 0
        parts.append(
            {
                "brickid": src.brickid[has].astype(np.int32),
                "objid": src.objid[has].astype(np.int32),
                **{
                    f"bulge_flux_{b}": src.bulge_flux_nmgy[has, i].astype(np.float32)
                    for i, b in enumerate("grz")
                },
                "bulge_r_arcsec": src.bulge_r_arcsec[has].astype(np.float32),
                **{
                    f"knot_flux_{b}": src.knot_flux_nmgy[has, i].astype(np.float32)
                    for i, b in enumerate("grz")
                },
                **{
                    k: getattr(src, k)[has].astype(np.int16 if k.startswith("n_") else np.float32)
                    for k in STRUCTURE_FIELDS
                    if k != "knot_flux_nmgy"
                },
            }
        )
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((cols["objid"], cols["brickid"]))
    table = pa.table({k: v[order] for k, v in cols.items()})
    atomic_write_parquet(str(bulges_path(root)), table)


def write_manifest(root: Path, cfg: SampleSkyConfig) -> None:
    """Write ``samplesky.json`` (the config and GENERATOR_VERSION) for the server and re-runs."""
    text = (
        json.dumps(asdict(cfg) | {"generator_version": GENERATOR_VERSION}, indent=1, sort_keys=True)
        + "\n"
    )
    atomic_write_bytes(str(root / MANIFEST_NAME), text.encode())


def read_manifest(root: Path) -> SampleSkyConfig:
    """The config a sample sky under ``root`` was generated with."""
    path = Path(root) / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: no sample sky here (run `astroclip sample-sky generate`)")
    raw = json.loads(path.read_text())
    raw.pop("generator_version", None)
    for r in raw["releases"]:
        for key in ("specprod", "zcatalog_dir"):
            if key not in r:
                raise ValueError(
                    f"{path}: release {r.get('name')!r} has no {key} (written by older code); "
                    f"delete {Path(root)} to regenerate"
                )
    releases = tuple(
        ReleaseFootprint(
            r["name"],
            r["specprod"],
            tuple(r["pixels"]),
            r["target_fraction"],
            tuple(r["surveys"]),
            zcatalog_dir=r["zcatalog_dir"],
        )
        for r in raw.pop("releases")
    )
    return SampleSkyConfig(releases=releases, decoys=DecoyRates(**raw.pop("decoys")), **raw)


def manifest_generator_version(root: Path) -> int:
    """GENERATOR_VERSION of the code that wrote the sky under ``root`` (1: before it was kept)."""
    return int(json.loads((Path(root) / MANIFEST_NAME).read_text()).get("generator_version", 1))


def _code(text: str) -> int:
    return zlib.crc32(text.encode())


def write_sweeps(root: Path, cfg: SampleSkyConfig, skies: dict[int, PixelSky]) -> int:
    """Write every sweep box touched by the sky's sources; return the number of sources."""
    groups: dict[tuple[str, int, int], list[dict[str, np.ndarray]]] = {}
    for pixel in sorted(skies):
        src = skies[pixel].sources
        photsys = skies[pixel].targets.photsys
        cols = sweep_columns(cfg.seed, src, photsys)
        ra0 = (np.floor(src.ra_deg / layout.SWEEP_RA_STEP_DEG) * layout.SWEEP_RA_STEP_DEG).astype(
            int
        )
        dec0 = (
            np.floor(src.dec_deg / layout.SWEEP_DEC_STEP_DEG) * layout.SWEEP_DEC_STEP_DEG
        ).astype(int)
        for box in sorted(set(zip(ra0.tolist(), dec0.tolist(), strict=True))):
            sel = (ra0 == box[0]) & (dec0 == box[1])
            region = "north" if photsys == "N" else "south"
            groups.setdefault((region, *box), []).append({k: v[sel] for k, v in cols.items()})
    total = 0
    for (region, ra0, dec0), parts in sorted(groups.items()):
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        order = np.lexsort((cols["OBJID"], cols["BRICKID"]))
        ids = source_key(cols["BRICKID"], cols["OBJID"])
        if np.unique(ids).size != ids.size:
            raise ValueError(f"sweep {region} {ra0} {dec0}: duplicate (BRICKID, OBJID)")
        path = legacysurvey_root(root) / layout.sweep_path(region, ra0, dec0)
        write_sweep(path, {k: v[order] for k, v in cols.items()})
        total += ids.size
    return total


def _file_rng(
    cfg: SampleSkyConfig, release: str, survey: str, program: str, coadd_pixel: int
) -> np.random.Generator:
    seq = np.random.SeedSequence(
        [cfg.seed, _code(release), _code(survey), _code(program), coadd_pixel]
    )
    return np.random.default_rng(seq)


@dataclass(frozen=True)
class CoaddContents:
    """What one coadd file (and its redrock file) of the sample sky holds, before writing.

    ``rows`` indexes the pixel's :class:`ObservationRows` (sorted by TARGETID); arrays per arm
    are (N, npix_arm). Built by :func:`coadd_contents`, the one place that draws them, so the
    generator and the on-request renderer (:mod:`astroclip_core.samplesky.lazy`) agree.
    """

    coadd_pixel: int
    survey: str
    program: str
    rows: np.ndarray
    fibermap: dict[str, np.ndarray]
    flux: dict[str, np.ndarray]
    ivar: dict[str, np.ndarray]
    mask: dict[str, np.ndarray]
    redshifts: dict[str, np.ndarray]
    header: dict[str, object]


def coadd_keys(rows: ObservationRows) -> list[tuple[int, str, str]]:
    """The (coadd_pixel, survey, program) of every coadd file of one pixel, in writing order."""
    return sorted(
        set(
            zip(rows.coadd_pixel.tolist(), rows.survey.tolist(), rows.program.tolist(), strict=True)
        )
    )


def coadd_contents(
    cfg: SampleSkyConfig,
    fp: ReleaseFootprint,
    sky: PixelSky,
    rows: ObservationRows,
    key: tuple[int, str, str],
    models: dict[int, dict[str, np.ndarray]] | None = None,
) -> CoaddContents:
    """The contents of the coadd file ``key`` = (coadd_pixel, survey, program) of one pixel.

    Deterministic: the noise comes from the file's own generator (:func:`_file_rng`), so a
    file can be drawn alone, in any order. ``models`` memoises noiseless model spectra by
    target index across the files of a pixel (a repeat target is in two files).
    """
    coadd_pixel, survey, program = key
    targets = sky.targets
    models = {} if models is None else models
    sel = np.flatnonzero(
        (rows.coadd_pixel == coadd_pixel) & (rows.survey == survey) & (rows.program == program)
    )
    sel = sel[np.argsort(targets.targetid[rows.target[sel]], kind="stable")]
    idx = rows.target[sel]
    rng = _file_rng(cfg, fp.name, survey, program, coadd_pixel)
    for i in idx.tolist():
        if i not in models:
            models[i] = model_spectrum(targets, i)
    obs = observe([models[i] for i in idx.tolist()], rng, rows.exptime_s[sel], program == "bright")
    fibermap = fibermap_columns(cfg.seed, targets, rows, sel, fiberstatus_of(rng, targets, idx))
    redshifts = redshift_columns(rng, targets, idx)
    header = {
        "SURVEY": survey,
        "PROGRAM": program,
        "HPXPIXEL": coadd_pixel,
        "SPECPROD": fp.release.specprod,
    }
    return CoaddContents(
        coadd_pixel, survey, program, sel, fibermap, obs.flux, obs.ivar, obs.mask, redshifts, header
    )


def write_coadd_file(path: Path, c: CoaddContents) -> None:
    """Write the coadd FITS file of ``c`` at ``path`` (atomically)."""
    write_coadd(path, c.fibermap, c.flux, c.ivar, c.mask, header=c.header)


def _write_pixel_files(
    root: Path,
    cfg: SampleSkyConfig,
    fp: ReleaseFootprint,
    sky: PixelSky,
    rows: ObservationRows,
    coadd_files: bool,
) -> tuple[list[dict[str, np.ndarray]], list[tuple[int, str, str]], list[dict[str, object]]]:
    """Write the redrock (and, with ``coadd_files``, coadd) files of one nside-16 pixel.

    Returns the zcatalog parts, the (coadd_pixel, survey, program) groups, and one row of the
    on-request index (:func:`write_coadd_index`) per coadd file. Without ``coadd_files`` each
    coadd is built in a scratch folder only to record its size and CRC-32 in that row.
    """
    models: dict[int, dict[str, np.ndarray]] = {}
    zparts, groups, index = [], [], []
    for key in coadd_keys(rows):
        c = coadd_contents(cfg, fp, sky, rows, key, models)
        coadd_pixel, survey, program = key
        relpath = layout.coadd_path(fp.release, survey, program, coadd_pixel)
        if coadd_files:
            write_coadd_file(desi_root(root) / relpath, c)
            body = (desi_root(root) / relpath).read_bytes()
        else:
            body = coadd_bytes(c)
        index.append(
            {
                "relpath": relpath,
                "pixel": sky.pixel,
                "coadd_pixel": coadd_pixel,
                "survey": survey,
                "program": program,
                "size_bytes": len(body),
                "crc32": zlib.crc32(body),
            }
        )
        write_redrock(
            desi_root(root) / layout.redrock_path(fp.release, survey, program, coadd_pixel),
            c.redshifts,
            c.fibermap,
            header=c.header,
        )
        idx = rows.target[c.rows]
        merged = {**c.fibermap, **c.redshifts}
        merged.update(
            SURVEY=np.full(idx.size, survey),
            PROGRAM=np.full(idx.size, program),
            HEALPIX=np.full(idx.size, coadd_pixel, dtype=np.int32),
            SV_NSPEC=rows.sv_nspec[c.rows],
            SV_PRIMARY=rows.sv_primary[c.rows],
            ZCAT_NSPEC=rows.zcat_nspec[c.rows],
            ZCAT_PRIMARY=rows.zcat_primary[c.rows],
        )
        zparts.append({k: np.asarray(merged[k]) for k in ZCATALOG_COLUMNS})
        groups.append(key)
    return zparts, groups, index


def coadd_bytes(c: CoaddContents) -> bytes:
    """The bytes :func:`write_coadd_file` writes for ``c`` (built in a scratch folder)."""
    with scratch_dir("coadd") as tmp:
        path = tmp / "coadd.fits"
        write_coadd_file(path, c)
        return path.read_bytes()


def coadd_index_path(root: Path, release: str) -> Path:
    """``<root>/render/coadds-<release>.parquet``: the coadd files rendered on request.

    One row per coadd file of the release that is not on disk: relpath (under the DESI root),
    pixel (nside-16 sky pixel), coadd_pixel, survey, program, size_bytes and crc32 of the bytes
    the generator would have written. Read by :mod:`astroclip_core.samplesky.lazy`.
    """
    return root / "render" / f"coadds-{release}.parquet"


def pixel_state_path(root: Path, release: str, pixel: int) -> Path:
    """``<root>/render/state-<release>-<pixel>.npz``: what drawing a coadd of the pixel needs.

    The pixel's :class:`PixelSky` and :class:`ObservationRows` (every array field, flattened by
    :func:`write_pixel_state`), so the server draws a coadd without drawing the pixel's sky
    again (a few seconds, more than a client's read timeout may allow). Not served.
    """
    return root / "render" / f"state-{release}-{int(pixel)}.npz"


def _flatten(obj: object, prefix: str = "") -> dict[str, np.ndarray]:
    """Every field of a (nested) dataclass of arrays and scalars as ``{dotted.name: array}``."""
    out: dict[str, np.ndarray] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            out |= _flatten(value, f"{prefix}{f.name}.")
        else:
            out[f"{prefix}{f.name}"] = np.asarray(value)
    return out


def _unflatten(cls: type, arrays: dict[str, np.ndarray], prefix: str = "") -> object:
    """Inverse of :func:`_flatten` for dataclass ``cls``; 0-d arrays become Python scalars."""
    hints = get_type_hints(cls)
    values = {}
    for f in fields(cls):
        hint = hints[f.name]
        if is_dataclass(hint):
            values[f.name] = _unflatten(hint, arrays, f"{prefix}{f.name}.")
        else:
            value = arrays[f"{prefix}{f.name}"]
            values[f.name] = value.item() if value.ndim == 0 else value
    return cls(**values)


def write_pixel_state(root: Path, release: str, sky: PixelSky, rows: ObservationRows) -> None:
    """Write :func:`pixel_state_path` (plain arrays: read back without pickle)."""
    arrays = _flatten(sky, "sky.") | _flatten(rows, "rows.")
    with scratch_dir("state") as tmp:
        np.savez(tmp / "state.npz", **arrays)
        atomic_write_bytes(
            str(pixel_state_path(root, release, sky.pixel)), (tmp / "state.npz").read_bytes()
        )


def read_pixel_state(root: Path, release: str, pixel: int) -> tuple[PixelSky, ObservationRows]:
    """The pixel's sky and observation rows written by :func:`write_pixel_state`.

    FileNotFoundError when there is none; ValueError (or KeyError) when it does not fit the
    dataclasses of this code.
    """
    with np.load(pixel_state_path(root, release, pixel), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    sky = _unflatten(PixelSky, {k[4:]: v for k, v in arrays.items() if k.startswith("sky.")})
    rows = _unflatten(
        ObservationRows, {k[5:]: v for k, v in arrays.items() if k.startswith("rows.")}
    )
    return sky, rows  # type: ignore[return-value]


def write_coadd_index(root: Path, release: str, rows: list[dict[str, object]]) -> None:
    """Write :func:`coadd_index_path` (sorted by relpath); an empty list removes the index."""
    path = coadd_index_path(root, release)
    if not rows:
        path.unlink(missing_ok=True)
        return
    rows = sorted(rows, key=lambda r: str(r["relpath"]))
    table = pa.table(
        {
            "relpath": pa.array([r["relpath"] for r in rows], pa.string()),
            "pixel": pa.array([r["pixel"] for r in rows], pa.int32()),
            "coadd_pixel": pa.array([r["coadd_pixel"] for r in rows], pa.int32()),
            "survey": pa.array([r["survey"] for r in rows], pa.string()),
            "program": pa.array([r["program"] for r in rows], pa.string()),
            "size_bytes": pa.array([r["size_bytes"] for r in rows], pa.int64()),
            "crc32": pa.array([r["crc32"] for r in rows], pa.int64()),
        }
    )
    atomic_write_parquet(str(path), table)


def _truth_part(sky: PixelSky, observed: np.ndarray) -> dict[str, np.ndarray]:
    t, src = sky.targets, sky.sources
    s = t.source[observed]
    has = s >= 0
    si = np.where(has, s, 0)
    galaxy_like = np.isin(t.kind[observed], GALAXY_KINDS)
    return {
        "targetid": t.targetid[observed],
        "healpix": np.full(observed.size, sky.pixel, dtype=np.int32),
        "kind": t.kind[observed],
        "is_galaxy": galaxy_like,
        "is_clean_galaxy": t.kind[observed] == "galaxy",
        "tracer": t.tracer[observed],
        "z": t.z[observed],
        "log_mstar": t.log_mstar[observed],
        "metallicity": t.metallicity[observed],
        "log_ssfr": t.log_ssfr[observed],
        "colour_class": np.where(galaxy_like, np.where(t.is_red[observed], "red", "blue"), None),
        "target_ra": t.ra_deg[observed],
        "target_dec": t.dec_deg[observed],
        "morphtype": t.morphtype[observed],
        "sersic_n": t.sersic_n[observed],
        "shape_r_arcsec": t.shape_r_arcsec[observed],
        "flux_g": t.flux_nmgy[observed, 0],
        "flux_r": t.flux_nmgy[observed, 1],
        "flux_z": t.flux_nmgy[observed, 2],
        "fibre_fraction": t.fibre_fraction[observed],
        "has_match": has,
        "ls_release": np.where(has, src.ls_release[si], 0),
        "brickid": np.where(has, src.brickid[si], 0),
        "objid": np.where(has, src.objid[si], 0),
        "ls_ra": np.where(has, src.ra_deg[si], np.nan),
        "ls_dec": np.where(has, src.dec_deg[si], np.nan),
    }


def _truth_table(parts: list[dict[str, np.ndarray]]) -> pa.Table:
    """Arrow truth table; properties that do not apply (and absent matches) are null."""
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    has = cols.pop("has_match")
    arrays: dict[str, pa.Array] = {}
    for name, values in cols.items():
        if name in ("ls_release", "brickid", "objid", "ls_ra", "ls_dec"):
            arrays[name] = pa.array(values, mask=~has)
        elif values.dtype.kind == "f":
            arrays[name] = pa.array(values, mask=np.isnan(values))
        elif values.dtype.kind in "UO":
            arrays[name] = pa.array(values.tolist(), type=pa.string())
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


def write_release(
    root: Path,
    cfg: SampleSkyConfig,
    fp: ReleaseFootprint,
    skies: dict[int, PixelSky],
    coadd_files: bool = False,
) -> ReleaseSummary:
    """Write one release: redrock files, zcatalog, tilepix, truth, and the coadd index.

    With ``coadd_files`` the coadds are written too; else they are listed in
    :func:`coadd_index_path` and the server renders each when it is asked for (the same bytes).
    """
    zparts, groups, truth, index = [], [], [], []
    for pixel in sorted(fp.pixels):
        sky = skies[pixel]
        rows = observation_rows(cfg, fp, sky.targets, pixel)
        parts, g, rows_index = _write_pixel_files(root, cfg, fp, sky, rows, coadd_files)
        if not coadd_files:
            write_pixel_state(root, fp.name, sky, rows)
        zparts += parts
        groups += g
        index += [] if coadd_files else rows_index
        truth.append(_truth_part(sky, np.unique(rows.target)))
    write_coadd_index(root, fp.name, index)
    zcat = {k: np.concatenate([p[k] for p in zparts]) for k in ZCATALOG_COLUMNS}
    write_zcatalog(
        desi_root(root) / layout.zcatalog_path(fp.release),
        zcat,
        header={"SPECPROD": fp.release.specprod},
    )
    _write_tilepix(root, fp, groups)
    table = _truth_table(truth)
    atomic_write_parquet(str(truth_path(root, fp.name)), table)
    return ReleaseSummary(
        release=fp.name,
        n_pixels=len(fp.pixels),
        n_spectra=int(zcat["TARGETID"].size),
        n_targets=int(table.num_rows),
        n_clean_galaxies=int(np.sum(table["is_clean_galaxy"].to_numpy())),
        n_coadd_files=len(groups),
    )


def _write_tilepix(root: Path, fp: ReleaseFootprint, groups: list[tuple[int, str, str]]) -> None:
    """``healpix/tilepix.fits``: one row per (pixel, survey, program, tile)."""
    rows = [
        (
            coadd_pixel,
            survey,
            program,
            80000 + _code(f"{survey}{program}{coadd_pixel // 4}{k}") % 20000,
        )
        for coadd_pixel, survey, program in sorted(groups)
        for k in range(1 + _code(f"{coadd_pixel}{survey}") % 2)
    ]
    cols = {name: np.array([r[i] for r in rows]) for i, name in enumerate(TILEPIX_COLUMNS)}
    rec = build_records("tilepix", cols, TILEPIX_COLUMNS)

    def build(fits: fitsio.FITS) -> None:
        fits.write(None)
        fits.write_table(rec, extname="TILEPIX")

    write_fits_atomic(desi_root(root) / layout.tilepix_path(fp.release), build)


def generate(
    root: Path | str,
    cfg: SampleSkyConfig,
    releases: list[str] | None = None,
    coadd_files: bool = False,
) -> GenerationSummary:
    """Generate ``releases`` (default: all in ``cfg``) of the sample sky under ``root``.

    The coadd files (most of the sky's bytes: each keeps 11-diagonal resolution matrices) are
    not written unless ``coadd_files``: the server renders each on request, byte for byte what
    would have been written (:mod:`astroclip_core.samplesky.lazy`).
    """
    start = time.perf_counter()
    root = Path(root)
    names = releases if releases is not None else [r.name for r in cfg.releases]
    footprints = [cfg.footprint(name) for name in names]
    skies = {pixel: build_pixel_sky(cfg, pixel) for pixel in cfg.union_pixels()}
    n_sources = write_sweeps(root, cfg, skies)
    write_bulges(root, skies)
    summaries = tuple(write_release(root, cfg, fp, skies, coadd_files) for fp in footprints)
    write_manifest(root, cfg)
    return GenerationSummary(str(root), summaries, n_sources, time.perf_counter() - start)
