"""Embed objects the pipeline has never seen: arrays, DESI coadd files, Legacy Surveys cutout
files, and positions whose cutouts and spectra are fetched through the configured sources.

Python API:

- :func:`embed_images` / :func:`embed_spectra`: arrays -> (N, D) unit embeddings;
- :func:`objects_from_coadd`, :func:`objects_from_cutout`, :func:`objects_from_radec`: files
  or positions -> :class:`Objects` (what to embed, with position and provenance);
- :func:`embed_objects`: :class:`Objects` -> the object-embeddings table
  (:func:`astroclip_core.tables.schemas.object_embeddings_schema`: the embeddings schema plus
  ``source``; the embedding of a modality an object lacks is null);
- :func:`embed_files`: all of it at once, which is what ``astroclip embed`` runs.

Inputs are checked first, and bad input raises :class:`FormatError` naming the file (or the
argument) and the problem: a cutout with other bands than g, r, z (one band, say), another
pixel scale than 0.262″ or fewer pixels than the model's crop; a spectrum off the 7781-pixel
grid that cannot be resampled (one that can is resampled, and the log says so); a coadd with
no FIBERMAP.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from astroclip_core import fsio
from astroclip_core.errors import FormatError
from astroclip_core.formats.desi import N_WAVELENGTH
from astroclip_core.formats.desi_resample import GridNote, read_coadd_on_grid, resample_to_grid
from astroclip_core.formats.legacysurvey import PIXSCALE_ARCSEC, cutout_centre_deg, read_cutout
from astroclip_core.model.clip import AstroClipModel
from astroclip_core.model.image import centre_crop
from astroclip_core.sky.healpix import pixels_of
from astroclip_core.tables.embeddings import object_embeddings_table

log = logging.getLogger(__name__)

BANDS = "grz"
SPECTRUM_MATCH_RADIUS_ARCSEC = 1.0  # a position has a DESI spectrum when a target is this close


@dataclass(frozen=True)
class Objects:
    """Objects to embed; row i of the per-object arrays is one object.

    ``images`` (n_img, 3, H, W) float32 nanomaggies g, r, z belong to the rows where
    ``has_image`` is True, in row order; ``flux``/``ivar`` (n_spec, 7781) float32 and ``mask``
    (n_spec, 7781), nonzero = bad, to the rows where ``has_spectrum`` is True. ``targetid``
    is -1 where no DESI target is known, ``z`` NaN where no redshift is.
    """

    source: tuple[str, ...]
    targetid: np.ndarray  # (N,) int64
    ra_deg: np.ndarray  # (N,) float64
    dec_deg: np.ndarray  # (N,) float64
    z: np.ndarray  # (N,) float64
    has_image: np.ndarray  # (N,) bool
    has_spectrum: np.ndarray  # (N,) bool
    images: np.ndarray | None = None
    flux: np.ndarray | None = None
    ivar: np.ndarray | None = None
    mask: np.ndarray | None = None
    notes: tuple[str, ...] = field(default=())  # what was done to reach the model's inputs

    def __len__(self) -> int:
        return len(self.source)


def _check_images(images: np.ndarray, crop_pix: int, name: str) -> np.ndarray:
    cube = np.asarray(images, dtype=np.float32)
    if cube.ndim == 3:
        cube = cube[None]
    if cube.ndim != 4 or cube.shape[1] != len(BANDS):
        raise FormatError(
            name, f"images have shape {cube.shape}; expected (N, 3, H, W), bands g, r, z"
        )
    if min(cube.shape[-2:]) < crop_pix:
        raise FormatError(
            name,
            f"images are {cube.shape[-2]}x{cube.shape[-1]} pixels; the model crops the central "
            f"{crop_pix}x{crop_pix} (at {PIXSCALE_ARCSEC}″ per pixel)",
        )
    if not np.isfinite(cube).all():
        raise FormatError(name, f"{int((~np.isfinite(cube)).sum())} non-finite pixel(s)")
    return cube


@torch.no_grad()
def embed_images(
    model: AstroClipModel,
    images_nmgy: np.ndarray,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    name: str = "images",
) -> np.ndarray:
    """(N, 3, H, W) g, r, z nanomaggies at 0.262″/pixel (H, W >= the model's crop; centre-
    cropped) -> (N, D) float32 unit embeddings. FormatError naming ``name`` on bad input."""
    crop = model.config.image.crop_pix
    cube = _check_images(images_nmgy, crop, name)
    model.eval()
    out = np.empty((len(cube), model.config.head.embed_dim), dtype=np.float32)
    for start in range(0, len(cube), batch_size):
        batch = torch.from_numpy(cube[start : start + batch_size])  # (b, 3, H, W)
        batch = centre_crop(batch, crop).contiguous().to(device)
        out[start : start + len(batch)] = model.encode_image(batch).cpu().numpy()
    return out


def spectra_on_grid(
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray | None = None,
    wavelength: np.ndarray | None = None,
    name: str = "spectra",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, GridNote]:
    """(N, L) spectra -> flux, ivar, mask (N, 7781) on the model's grid, and what was done.

    Without ``wavelength`` the spectra must already have the grid's 7781 pixels; with it, they
    are resampled when they can be (:func:`~astroclip_core.formats.desi_resample.resample_to_grid`).
    """
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float32))
    ivar = np.atleast_2d(np.asarray(ivar, dtype=np.float32))
    if wavelength is None:
        if flux.shape[-1] != N_WAVELENGTH:
            raise FormatError(
                name,
                f"spectra have {flux.shape[-1]} pixels, not the {N_WAVELENGTH} of the model's "
                "grid (3600–9824 Å at 0.8 Å); pass their wavelengths to have them resampled",
            )
        wavelength_grid = None
    else:
        wavelength_grid = np.asarray(wavelength, dtype=np.float64)
    if wavelength_grid is None:
        if ivar.shape != flux.shape or (mask is not None and np.shape(mask) != flux.shape):
            raise FormatError(name, f"flux {flux.shape}, ivar {ivar.shape} and mask differ")
        mask = np.zeros(flux.shape, np.uint32) if mask is None else np.asarray(mask)
        note = GridNote("on-grid", "already on the 7781-pixel grid")
    else:
        flux, ivar, mask, note = resample_to_grid(wavelength_grid, flux, ivar, mask, name)
    bad = ~np.isfinite(flux) | ~np.isfinite(ivar)
    if bad.any():
        raise FormatError(name, f"{int(bad.sum())} non-finite flux or ivar value(s)")
    return flux, ivar, mask, note


@torch.no_grad()
def embed_spectra(
    model: AstroClipModel,
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray | None = None,
    wavelength: np.ndarray | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    name: str = "spectra",
) -> np.ndarray:
    """(N, L) flux (1e-17 erg/s/cm²/Å) and ivar (and mask, nonzero = bad) -> (N, D) float32
    unit embeddings. Pixels with ivar <= 0 or a mask bit are ignored, as in training. Spectra
    off the grid need ``wavelength`` (L,) Å and are resampled when they can be."""
    flux, ivar, mask, note = spectra_on_grid(flux, ivar, mask, wavelength, name)
    if note.how == "resampled":
        log.info("%s: %s", name, note.text)
    model.eval()
    valid = (np.asarray(mask) == 0) & (ivar > 0)  # (N, 7781), the training rule
    out = np.empty((len(flux), model.config.head.embed_dim), dtype=np.float32)
    for start in range(0, len(flux), batch_size):
        rows = slice(start, start + batch_size)
        f = torch.from_numpy(np.ascontiguousarray(flux[rows])).to(device)
        v = torch.from_numpy(np.ascontiguousarray(valid[rows])).to(device)
        w = torch.from_numpy(np.ascontiguousarray(ivar[rows], dtype=np.float32)).to(device)
        out[rows] = model.encode_spectrum(f, v, w).cpu().numpy()
    return out


def objects_from_coadd(path: str, targetids: Sequence[int] | None = None) -> Objects:
    """The targets of a DESI coadd file: every fibre on a target (TARGETID > 0 and, where
    FIBERMAP has OBJTYPE, OBJTYPE 'TGT': no sky or unassigned fibres), or the listed ones.

    Arms are merged onto the grid, or resampled when they lie on other grids (the note says
    which). A coadd with no FIBERMAP raises FormatError naming the file; a listed TARGETID
    that the file lacks raises KeyError naming both.
    """
    with fsio.local_copy(path) as local:
        try:
            arrays, note = read_coadd_on_grid(local, None if targetids is None else list(targetids))
        except FormatError as err:
            raise FormatError(path, err.problem) from None
    fm = arrays.fibermap
    keep = np.ones(len(arrays.targetid), bool)
    if targetids is None:
        # Targets only: no negative TARGETIDs (unassigned fibres), no sky or bad fibres.
        keep = arrays.targetid > 0
        if "objtype" in fm.column_names:
            keep &= np.asarray(fm.column("objtype").to_pylist()) == "TGT"
    n = int(keep.sum())
    log.info("%s: %d target(s); %s", path, n, note.text)
    return Objects(
        source=(f"coadd:{path}",) * n,
        targetid=arrays.targetid[keep],
        ra_deg=fm.column("target_ra").to_numpy()[keep].astype(np.float64),
        dec_deg=fm.column("target_dec").to_numpy()[keep].astype(np.float64),
        z=np.full(n, np.nan),
        has_image=np.zeros(n, bool),
        has_spectrum=np.ones(n, bool),
        flux=arrays.flux[keep],
        ivar=arrays.ivar[keep],
        mask=arrays.mask[keep],
        notes=(f"{path}: {note.text}",),
    )


def objects_from_cutout(path: str) -> Objects:
    """One Legacy Surveys cutout FITS (g, r, z at 0.262″/pixel) as an object at its centre."""
    image = read_cutout(path)  # FormatError naming the file: bands, pixel scale, non-finite
    ra, dec = cutout_centre_deg(path)
    return Objects(
        source=(f"cutout:{path}",),
        targetid=np.full(1, -1, np.int64),
        ra_deg=np.array([ra]),
        dec_deg=np.array([dec]),
        z=np.full(1, np.nan),
        has_image=np.ones(1, bool),
        has_spectrum=np.zeros(1, bool),
        images=image[None],
    )


@torch.no_grad()
def embed_objects(
    model: AstroClipModel,
    parts: Sequence[Objects],
    model_name: str,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> pa.Table:
    """The object-embeddings table of every object of ``parts`` (in order): targetid (null
    where none), healpix (nside 16), ra, dec, z, split (null), image_embedding and
    spectrum_embedding (null where the object lacks that modality), model, source."""
    model = model.to(device).eval()
    dim = model.config.head.embed_dim
    image_rows, spectrum_rows, tables = [], [], []
    for part in (p for p in parts if len(p)):
        n = len(part)
        img = np.full((n, dim), np.nan, np.float32)
        spec = np.full((n, dim), np.nan, np.float32)
        if part.has_image.any():
            img[part.has_image] = embed_images(
                model, part.images, batch_size, device, name=part.source[0].split(":", 1)[1]
            )
        if part.has_spectrum.any():
            spec[part.has_spectrum] = embed_spectra(
                model, part.flux, part.ivar, part.mask, None, batch_size, device,
                name=part.source[0].split(":", 1)[1],
            )  # fmt: skip
        image_rows.append(img)
        spectrum_rows.append(spec)
        tables.append(part)
    if not tables:
        raise ValueError("nothing to embed: give coadd files, cutout files or a RA/Dec table")
    cat = {
        name: np.concatenate([getattr(p, name) for p in tables])
        for name in ("targetid", "ra_deg", "dec_deg", "z", "has_image", "has_spectrum")
    }
    image_emb = np.concatenate(image_rows)
    spectrum_emb = np.concatenate(spectrum_rows)
    for name, emb, has in (
        ("image", image_emb, cat["has_image"]),
        ("spectrum", spectrum_emb, cat["has_spectrum"]),
    ):
        if not np.isfinite(emb[has]).all():
            raise ValueError(f"model {model_name} produced non-finite {name} embeddings")
    return object_embeddings_table(
        targetid=cat["targetid"],
        healpix=pixels_of(cat["ra_deg"], cat["dec_deg"]),
        ra_deg=cat["ra_deg"],
        dec_deg=cat["dec_deg"],
        z=cat["z"],
        image_emb=np.where(cat["has_image"][:, None], image_emb, np.nan),
        spectrum_emb=np.where(cat["has_spectrum"][:, None], spectrum_emb, np.nan),
        model=model_name,
        source=[s for p in tables for s in p.source],
    )


# ---- positions: cutouts and spectra fetched through the sources ----


def read_radec_table(path: str) -> tuple[np.ndarray, np.ndarray]:
    """RA and Dec (deg) of a CSV or Parquet table with columns ``ra``/``dec`` (or ``ra_deg``/
    ``dec_deg``, any case); FormatError naming the file and the problem otherwise."""
    import pyarrow.csv as pacsv

    try:
        if path.endswith(".parquet"):
            table = fsio.read_parquet(path)
        else:
            table = pacsv.read_csv(pa.BufferReader(fsio.read_bytes(path)))
    except FileNotFoundError:
        raise
    except (pa.ArrowInvalid, OSError, ValueError) as err:
        raise FormatError(path, f"not a readable CSV or Parquet table: {err}") from None
    names = {c.lower(): c for c in table.column_names}
    cols = []
    for want in ("ra", "dec"):
        found = names.get(want) or names.get(f"{want}_deg") or names.get(f"target_{want}")
        if found is None:
            raise FormatError(
                path, f"no {want!r} column (nor {want}_deg); its columns: {table.column_names}"
            )
        try:
            cols.append(table.column(found).cast(pa.float64()).to_numpy(zero_copy_only=False))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise FormatError(path, f"column {found!r} is not numeric: {err}") from None
    ra, dec = cols
    bad = ~np.isfinite(ra) | ~np.isfinite(dec) | (np.abs(dec) > 90)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise FormatError(
            path, f"row {row}: RA/Dec ({ra[row]}, {dec[row]}) is not a position in degrees"
        )
    if ra.size == 0:
        raise FormatError(path, "the table has no rows")
    return ra % 360.0, dec


def objects_from_radec(
    path: str,
    desi,
    legacysurvey,
    cache,
    radius_arcsec: float = SPECTRUM_MATCH_RADIUS_ARCSEC,
) -> Objects:
    """Objects at the positions of the table ``path``: each one's cutout from ``legacysurvey``
    (a :class:`~astroclip_core.sources.legacysurvey.LegacySurveySource`) and, where the
    release catalogue of ``desi`` (a :class:`~astroclip_core.sources.desi.DesiSource`) has a
    target within ``radius_arcsec``, its spectrum from the coadd file holding it. Files are
    cached under ``cache`` (a StorageLayout) as the ingest caches them. A position whose
    cutout cannot be fetched keeps a null image embedding (the log says why)."""
    from astroclip_core.formats.desi import read_coadd_arrays
    from astroclip_core.formats.zcatalog import read_zcatalog
    from astroclip_core.sky.matching import crossmatch

    ra, dec = read_radec_table(path)
    n = ra.size
    batch = legacysurvey.fetch_cutouts(ra, dec, cache)
    for i in np.flatnonzero(~batch.ok):
        log.warning("%s row %d: no cutout (%s)", path, i, batch.reasons[i])
    columns = ["TARGETID", "TARGET_RA", "TARGET_DEC", "Z", "SURVEY", "PROGRAM", "HEALPIX"]
    zcat_path = desi.fetch_zcatalog(cache)
    try:  # one row per target: its best spectrum (ZCAT_PRIMARY), where the catalogue says
        zcat, _ = read_zcatalog(zcat_path, columns=[*columns, "ZCAT_PRIMARY"], selection=None)
        zcat = zcat.filter(zcat.column("zcat_primary"))
    except FormatError:
        zcat, _ = read_zcatalog(zcat_path, columns=columns, selection=None)
    zcat = zcat.filter(pc.greater(zcat.column("targetid"), 0))
    match = crossmatch(
        ra, dec,
        zcat.column("target_ra").to_numpy(), zcat.column("target_dec").to_numpy(),
        radius_arcsec,
    )  # fmt: skip
    targetid = np.full(n, -1, np.int64)
    z = np.full(n, np.nan)
    targetid[match.idx1] = zcat.column("targetid").to_numpy()[match.idx2]
    z[match.idx1] = zcat.column("z").to_numpy()[match.idx2]
    flux = np.zeros((n, N_WAVELENGTH), np.float32)
    ivar = np.zeros((n, N_WAVELENGTH), np.float32)
    mask = np.zeros((n, N_WAVELENGTH), np.uint32)
    has_spectrum = np.zeros(n, bool)
    files: dict[tuple[str, str, int], list[int]] = {}
    for i, j in zip(match.idx1, match.idx2, strict=True):
        key = (
            str(zcat.column("survey")[j]),
            str(zcat.column("program")[j]),
            int(zcat.column("healpix")[j].as_py()),
        )
        files.setdefault(key, []).append(int(i))
    for (survey, program, pixel), rows in sorted(files.items()):
        cached = desi.fetch_coadd(cache, survey, program, pixel)
        with fsio.local_copy(cached) as local:
            arrays = read_coadd_arrays(local, targetids=sorted(set(targetid[rows].tolist())))
        where = {int(t): k for k, t in enumerate(arrays.targetid)}
        for i in rows:
            k = where[int(targetid[i])]
            flux[i], ivar[i], mask[i] = arrays.flux[k], arrays.ivar[k], arrays.mask[k]
            has_spectrum[i] = True
    log.info(
        "%s: %d position(s), %d cutout(s), %d DESI spectrum/spectra within %g arcsec",
        path, n, int(batch.ok.sum()), int(has_spectrum.sum()), radius_arcsec,
    )  # fmt: skip
    return Objects(
        source=tuple(f"radec:{path}:{i}" for i in range(n)),
        targetid=targetid,
        ra_deg=ra,
        dec_deg=dec,
        z=z,
        has_image=batch.ok.copy(),
        has_spectrum=has_spectrum,
        images=batch.images,
        flux=flux[has_spectrum],
        ivar=ivar[has_spectrum],
        mask=mask[has_spectrum],
    )


def embed_files(
    model: AstroClipModel,
    model_name: str,
    coadds: Sequence[str] = (),
    targetids: Sequence[int] | None = None,
    cutouts: Sequence[str] = (),
    radec: Objects | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> pa.Table:
    """Embed the targets of ``coadds`` (all of them, or those of ``targetids``: each must be
    in one of the files), the ``cutouts`` and the already fetched ``radec`` objects; return
    the object-embeddings table, coadd rows first, then cutouts, then positions."""
    parts: list[Objects] = []
    found: set[int] = set()
    for path in coadds:
        wanted = None
        if targetids is not None:
            ids = _coadd_targetids(path)
            wanted = sorted(set(targetids) & ids)
            found |= set(wanted)
            if not wanted:
                continue
        parts.append(objects_from_coadd(path, wanted))
    if targetids is not None:
        missing = sorted(set(targetids) - found)
        if missing:
            raise ValueError(f"--targetids {missing[:10]} are in none of {list(coadds)}")
    parts += [objects_from_cutout(path) for path in cutouts]
    if radec is not None:
        parts.append(radec)
    return embed_objects(model, parts, model_name, batch_size, device)


def _coadd_targetids(path: str) -> set[int]:
    from astroclip_core.formats._fits import open_fits, read_hdu
    from astroclip_core.formats.desi import require_fibermap

    with fsio.local_copy(path) as local, open_fits(local) as fits:
        try:
            require_fibermap(fits, local)
        except FormatError as err:
            raise FormatError(path, err.problem) from None
        ids = read_hdu(path, "FIBERMAP", lambda: fits["FIBERMAP"].read(columns="TARGETID"))
    return set(np.asarray(ids, dtype=np.int64).tolist())


def summary_lines(table: pa.Table) -> list[str]:
    """One line per source kind: objects and how many have each embedding."""
    kinds = [s.split(":", 1)[0] for s in table.column("source").to_pylist()]
    img = table.column("image_embedding").is_valid().to_numpy(zero_copy_only=False)
    spec = table.column("spectrum_embedding").is_valid().to_numpy(zero_copy_only=False)
    lines = []
    for kind in dict.fromkeys(kinds):
        rows = np.array([k == kind for k in kinds])
        lines.append(
            f"{kind}: {int(rows.sum())} object(s), {int(img[rows].sum())} image and "
            f"{int(spec[rows].sum())} spectrum embedding(s)"
        )
    return lines


__all__ = [
    "Objects",
    "embed_files",
    "embed_images",
    "embed_objects",
    "embed_spectra",
    "objects_from_coadd",
    "objects_from_cutout",
    "objects_from_radec",
    "read_radec_table",
    "spectra_on_grid",
]
