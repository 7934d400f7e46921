"""The data root and every path under it. This module is the one owner of the storage layout.

The root is ``$ASTROCLIP_STORAGE`` (a local path or any fsspec URL such as
``s3://bucket/prefix``), default ``storage/`` in the repository. Paths are returned as
strings joined with ``/`` so that a local folder and an object store behave the same::

    raw/desi/<release>/...                       fetched subset of the public tree, same relative paths
    raw/legacysurvey/<dr>/<north|south>/sweep/9.0/...   fetched sweep catalogues
    raw/legacysurvey/<dr>/cutouts/<layer>/<key>.fits     cutout cache
    raw/legacysurvey/<dr>/<north|south>/coadd/<AAA>/<brick>/legacysurvey-<brick>-image-<band>.fits.fz
                                                 fetched coadd bricks (brick_cache), and beside
    raw/legacysurvey/<dr>/survey-bricks.fits.gz, <region>/survey-bricks-dr9-<region>.fits.gz
    interim/raw-used/<release>/healpix=<pix>/<stage>.json  raw files a partition's stage read
    catalog/<release>/selected.parquet + selection.json     the selected redshift catalogue
    interim/<stage>/<release>/healpix=<pix>/part-0.parquet  per-partition intermediate tables
    pairs/<release>/healpix=<pix>/part-0.parquet
    failures/<release>/healpix=<pix>/<stage>.parquet     objects that could not be fetched
    hf/<release>/README.md + data/{train,test}-*.parquet
    models/<release>/<preset>-<run>/model.safetensors, config.json, README.md, history.parquet
    models/<release>/.runs/<preset>-<run>/<run key>/   a training run until it finishes
    embeddings/<release>/<model>/healpix=<pix>/part-0.parquet
    reports/<release>/<model>/evaluation.json + figures
    hats/<release>/pairs/                        HATS collections for lsdb (catalogue + margin):
    hats/<release>/embeddings/<model>/           the pairs' catalogue columns, each model's embeddings
    samplesky/                                   the generated sample sky (local data roots)

Every per-partition table lives in ``healpix=<pixel>`` folders, ``<pixel>`` the nested nside-16
partition pixel (``astroclip_core.sky.healpix.PARTITION_NSIDE``). This module builds that folder
name (:func:`partition_file`) and parses it back (:func:`pixel_from_path`); no other module
formats or globs it. Every path builder takes its arguments in the order release, model, pixel,
then what names the file inside the partition (a stage).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STORAGE_ENV = "ASTROCLIP_STORAGE"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STORAGE = REPO_ROOT / "storage"
# Hive key of the partition folders, and the file name of a partition's single Parquet file.
PARTITION_KEY = "healpix"
PARTITION_FILE = "part-0.parquet"


def partition_file(table_dir: str, pixel: int, name: str = PARTITION_FILE) -> str:
    """``<table_dir>/healpix=<pixel>/<name>``: one partition's file of a hive-partitioned table."""
    return f"{table_dir.rstrip('/')}/{PARTITION_KEY}={int(pixel)}/{name}"


def partition_glob(table_dir: str, name: str = PARTITION_FILE) -> str:
    """The glob pattern that matches :func:`partition_file` of every pixel under ``table_dir``."""
    return f"{table_dir.rstrip('/')}/{PARTITION_KEY}=*/{name}"


def pixel_from_path(path: str) -> int:
    """The partition pixel of a path built by :func:`partition_file` (inverse of it).

    Raises ValueError naming ``path`` when its folder is not ``healpix=<non-negative int>``.
    """
    folder = path.rstrip("/").split("/")[-2] if "/" in path.rstrip("/") else ""
    key, sep, value = folder.partition("=")
    if key != PARTITION_KEY or not sep or not value.isdigit():
        raise ValueError(f"{path}: partition folder {folder!r} is not {PARTITION_KEY}=<pixel>")
    return int(value)


def default_root() -> str:
    """The data root from ``$ASTROCLIP_STORAGE``, else the repository's ``storage/``."""
    return os.environ.get(STORAGE_ENV) or str(DEFAULT_STORAGE)


@dataclass(frozen=True)
class StorageLayout:
    """Paths under one data root (local path or fsspec URL, no trailing slash needed)."""

    root: str

    def _join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *[p.strip("/") for p in parts]])

    @property
    def is_local(self) -> bool:
        """True when the root is a plain local path (or a file:// URL)."""
        return "://" not in self.root or self.root.startswith("file://")

    def samplesky_dir(self) -> str:
        """The sample sky's folder (its generator lock included), when it is not set elsewhere."""
        return self._join("samplesky")

    # Raw downloads
    def raw_desi(self, relpath: str) -> str:
        """Cache path of a DESI file, ``relpath`` relative to the public root (includes release)."""
        return self._join("raw", "desi", relpath)

    def raw_legacysurvey(self, dr: str, relpath: str) -> str:
        """Cache path of a Legacy Surveys file relative to the ``<dr>/`` root."""
        return self._join("raw", "legacysurvey", dr, relpath)

    def brick_cache(self, dr: str, relpath: str) -> str:
        """Cache path of a DR9 brick image or brick table, ``relpath`` as in the archive.

        ``relpath`` comes from ``astroclip_core.sources.layout`` (``brick_image_path``,
        ``SURVEY_BRICKS_PATH``, ``survey_bricks_region_path``); the cache mirrors it.
        """
        return self.raw_legacysurvey(dr, relpath)

    def cutout_cache(self, dr: str, layer: str, key: str) -> str:
        """Cache path of one cutout response, ``key`` a stable name built from the query."""
        return self._join("raw", "legacysurvey", dr, "cutouts", layer, f"{key}.fits")

    def raw_dir(self) -> str:
        """The raw download cache: every file under it can be fetched again from its source."""
        return self._join("raw")

    def raw_used_file(self, release: str, pixel: int, stage: str) -> str:
        """JSON list of the raw cache files one partition's stage read (for cache eviction)."""
        return partition_file(self._join("interim", "raw-used", release), pixel, f"{stage}.json")

    # Catalogue and per-partition intermediates
    def catalog_file(self, release: str) -> str:
        """The selected (clean-galaxy) redshift catalogue of one release, as Parquet."""
        return self._join("catalog", release, "selected.parquet")

    def catalog_report(self, release: str) -> str:
        """JSON record of the selection cuts of one release."""
        return self._join("catalog", release, "selection.json")

    def interim_file(self, release: str, pixel: int, stage: str) -> str:
        """Intermediate table of one partition and stage (spectra, sources, matches, cutouts)."""
        return partition_file(self._join("interim", stage, release), pixel)

    # Tables
    def pairs_dir(self, release: str) -> str:
        """Hive-partitioned folder of the pairs table of one release."""
        return self._join("pairs", release)

    def pairs_file(self, release: str, pixel: int) -> str:
        """The single Parquet file of one release and nside-16 pixel."""
        return partition_file(self.pairs_dir(release), pixel)

    def failures_file(self, release: str, pixel: int, stage: str) -> str:
        """Per-partition, per-stage table of files/objects that could not be fetched, with why."""
        return partition_file(self._join("failures", release), pixel, f"{stage}.parquet")

    def hf_dir(self, release: str) -> str:
        """Folder of the Hugging Face dataset of one release."""
        return self._join("hf", release)

    def model_dir(self, release: str, model: str) -> str:
        """Folder of one trained model, ``model`` = ``<preset>-<run>``."""
        return self._join("models", release, model)

    def model_runs_dir(self, release: str, model: str) -> str:
        """Work folders of the training runs of one model (hidden: never a published model)."""
        return self._join("models", release, ".runs", model)

    def model_run_dir(self, release: str, model: str, run_key: str) -> str:
        """Work folder of one training run of ``model``, ``run_key`` the digest of its config."""
        return self._join("models", release, ".runs", model, run_key)

    def model_replaced_dir(self, release: str, model: str) -> str:
        """Where the previous published model waits while a finished run replaces it."""
        return self._join("models", release, ".runs", model, "replaced")

    def current_model(self, release: str) -> str:
        """JSON pointer to the model the embeddings and evaluation of a release use."""
        return self._join("models", release, "current.json")

    def embeddings_models_dir(self, release: str) -> str:
        """Folder holding one embeddings folder per model of one release."""
        return self._join("embeddings", release)

    def embeddings_dir(self, release: str, model: str) -> str:
        """Hive-partitioned folder of the embeddings of one model."""
        return self._join("embeddings", release, model)

    def embeddings_file(self, release: str, model: str, pixel: int) -> str:
        """The single embeddings Parquet file of one pixel."""
        return partition_file(self.embeddings_dir(release, model), pixel)

    def report_dir(self, release: str, model: str) -> str:
        """Folder of the evaluation report and figures of one model."""
        return self._join("reports", release, model)

    # HATS collections (astroclip_core/publish/hats.py writes them; lsdb.open_catalog reads them)
    def hats_dir(self, release: str) -> str:
        """Folder of the HATS catalogues of one release."""
        return self._join("hats", release)

    def hats_pairs_dir(self, release: str) -> str:
        """HATS collection of the pairs' catalogue columns of one release."""
        return self._join("hats", release, "pairs")

    def hats_embeddings_dir(self, release: str, model: str) -> str:
        """HATS collection of one model's embeddings of one release."""
        return self._join("hats", release, "embeddings", model)


def default_layout() -> StorageLayout:
    """Layout over :func:`default_root`."""
    return StorageLayout(default_root())
