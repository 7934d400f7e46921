"""The data root and every path under it. This module is the one owner of the storage layout.

The root is ``$ASTROCLIP_STORAGE`` (a local path or any fsspec URL such as
``s3://bucket/prefix``), default ``storage/`` in the repository. Paths are returned as
strings joined with ``/`` so that a local folder and an object store behave the same::

    raw/desi/<release>/...                       fetched subset of the public tree, same relative paths
    raw/legacysurvey/<dr>/<north|south>/sweep/9.0/...   fetched sweep catalogues
    raw/legacysurvey/<dr>/cutouts/<layer>/<key>.fits     cutout cache
    catalog/<release>/selected.parquet + selection.json     the selected redshift catalogue
    interim/<stage>/<release>/healpix=<pix>/part-0.parquet  per-partition intermediate tables
    pairs/<release>/healpix=<pix>/part-0.parquet
    failures/<release>/healpix=<pix>/<stage>.parquet     objects that could not be fetched
    hf/<release>/README.md + data/{train,test}-*.parquet
    models/<release>/<preset>-<run>/model.pt, config.json, history.parquet
    embeddings/<release>/<model>/healpix=<pix>/part-0.parquet
    reports/<release>/<model>/evaluation.json + figures
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STORAGE_ENV = "ASTROCLIP_STORAGE"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STORAGE = REPO_ROOT / "storage"


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

    # Raw downloads
    def raw_desi(self, relpath: str) -> str:
        """Cache path of a DESI file, ``relpath`` relative to the public root (includes release)."""
        return self._join("raw", "desi", relpath)

    def raw_legacysurvey(self, dr: str, relpath: str) -> str:
        """Cache path of a Legacy Surveys file relative to the ``<dr>/`` root."""
        return self._join("raw", "legacysurvey", dr, relpath)

    def cutout_cache(self, dr: str, layer: str, key: str) -> str:
        """Cache path of one cutout response, ``key`` a stable name built from the query."""
        return self._join("raw", "legacysurvey", dr, "cutouts", layer, f"{key}.fits")

    # Catalogue and per-partition intermediates
    def catalog_file(self, release: str) -> str:
        """The selected (clean-galaxy) redshift catalogue of one release, as Parquet."""
        return self._join("catalog", release, "selected.parquet")

    def catalog_report(self, release: str) -> str:
        """JSON record of the selection cuts of one release."""
        return self._join("catalog", release, "selection.json")

    def interim_file(self, stage: str, release: str, pixel: int) -> str:
        """Intermediate table of one stage (spectra, sources, matches, cutouts) and partition."""
        return self._join("interim", stage, release, f"healpix={int(pixel)}", "part-0.parquet")

    # Tables
    def pairs_dir(self, release: str) -> str:
        """Hive-partitioned folder of the pairs table of one release."""
        return self._join("pairs", release)

    def pairs_file(self, release: str, pixel: int) -> str:
        """The single Parquet file of one release and nside-16 pixel."""
        return self._join("pairs", release, f"healpix={int(pixel)}", "part-0.parquet")

    def failures_file(self, release: str, pixel: int, stage: str) -> str:
        """Per-partition, per-stage table of files/objects that could not be fetched, with why."""
        return self._join("failures", release, f"healpix={int(pixel)}", f"{stage}.parquet")

    def hf_dir(self, release: str) -> str:
        """Folder of the Hugging Face dataset of one release."""
        return self._join("hf", release)

    def model_dir(self, release: str, model: str) -> str:
        """Folder of one trained model, ``model`` = ``<preset>-<run>``."""
        return self._join("models", release, model)

    def current_model(self, release: str) -> str:
        """JSON pointer to the model the embeddings and evaluation of a release use."""
        return self._join("models", release, "current.json")

    def embeddings_dir(self, release: str, model: str) -> str:
        """Hive-partitioned folder of the embeddings of one model."""
        return self._join("embeddings", release, model)

    def embeddings_file(self, release: str, model: str, pixel: int) -> str:
        """The single embeddings Parquet file of one pixel."""
        return self._join("embeddings", release, model, f"healpix={int(pixel)}", "part-0.parquet")

    def report_dir(self, release: str, model: str) -> str:
        """Folder of the evaluation report and figures of one model."""
        return self._join("reports", release, model)


def default_layout() -> StorageLayout:
    """Layout over :func:`default_root`."""
    return StorageLayout(default_root())
