"""The dataset card (README.md): YAML front matter that ``datasets`` and the Hub read, then prose.

The YAML is produced with the libraries' own serialisers (``huggingface_hub.DatasetCardData``
and ``datasets.info.DatasetInfosDict``) so that ``load_dataset`` parses exactly the features
and split sizes written here. Units and the wavelength grid come from the pairs schema
metadata (``astroclip_core.tables.schemas``), the one place they are defined.
"""

from __future__ import annotations

import json

from datasets import DatasetInfo, SplitDict, SplitInfo
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCardData

from astroclip_core.publish.features import hf_features
from astroclip_core.publish.info import DATA_FOLDER, HfDatasetInfo
from astroclip_core.tables.schemas import PAIRS_SCHEMA

LICENSE = "cc-by-4.0"  # DESI and Legacy Surveys public data: CC BY 4.0, with acknowledgement
TAGS = (
    "astronomy",
    "astrophysics",
    "galaxies",
    "spectroscopy",
    "multimodal",
    "contrastive-learning",
    "desi",
    "legacy-surveys",
)
TASK_CATEGORIES = ("feature-extraction", "tabular-regression")
_SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"))


def size_category(num_examples: int) -> str:
    """The Hub's ``size_categories`` bucket for ``num_examples`` rows."""
    for limit, name in _SIZE_CATEGORIES:
        if num_examples < limit:
            return name
    return "100K<n<1M" if num_examples < 1_000_000 else "1M<n<10M"


def card_yaml(info: HfDatasetInfo) -> str:
    """The YAML front matter (without the ``---`` fences) of the card of ``info``.

    A split without rows is left out: ``datasets`` cannot load an empty split.
    """
    loadable = [s for s in info.splits if s.num_examples > 0]
    data = DatasetCardData(
        pretty_name=f"AstroCLIP pairs: DESI {info.release.upper()} spectra x Legacy Surveys DR9 images",
        license=LICENSE,
        tags=list(TAGS),
        task_categories=list(TASK_CATEGORIES),
        size_categories=[size_category(info.num_examples)],
        configs=[
            {
                "config_name": "default",
                "data_files": [
                    {"split": s.name, "path": f"{DATA_FOLDER}/{s.name}-*"} for s in loadable
                ],
            }
        ],
    )
    splits = SplitDict()
    for stats in loadable:
        splits.add(
            SplitInfo(name=stats.name, num_bytes=stats.num_bytes, num_examples=stats.num_examples)
        )
    dataset_info = DatasetInfo(
        features=hf_features(),
        splits=splits,
        download_size=info.download_size_bytes,
        dataset_size=info.dataset_size_bytes,
    )
    DatasetInfosDict({"default": dataset_info}).to_dataset_card_data(data)
    return data.to_yaml()


def render_card(info: HfDatasetInfo) -> str:
    """The full README.md of the dataset described by ``info``."""
    return f"---\n{card_yaml(info)}\n---\n\n{_prose(info)}"


def _prose(info: HfDatasetInfo) -> str:
    blobs = json.loads(PAIRS_SCHEMA.metadata[b"astroclip.blobs"])
    grid = json.loads(PAIRS_SCHEMA.metadata[b"astroclip.grid"])
    step = round(grid["wavelength_step_angstrom"], 4)  # float64 difference: 0.80000000000018
    image = blobs["image"]
    bands = ",".join(image["bands"])
    rows = "\n".join(
        f"| {s.name} | {s.num_examples:,} | {s.num_shards} | {s.parquet_bytes / 1e6:,.1f} MB |"
        for s in info.splits
    )
    test_percent = round(100 * info.test_fraction)
    return f"""# AstroCLIP pairs: DESI {info.release.upper()} spectra with Legacy Surveys images

Each row pairs one galaxy's DESI spectrum with a {image["shape"][1]}x{image["shape"][2]}-pixel
{bands} image cut out of the DESI Legacy Imaging Surveys DR9 at the same position, together with
its redshift and catalogue photometry. It is built for multimodal contrastive pre-training
(AstroCLIP) and for zero-shot redshift and property regression from the learned embeddings.

## Splits

| split | rows | shards | size |
|---|---|---|---|
{rows}

The split of a galaxy is a deterministic hash of its DESI `TARGETID`
(`astroclip_core.tables.splits.split_of`, SplitMix64, {test_percent}% test). A galaxy keeps
its split across releases and rebuilds, so a model trained on one release is never evaluated
on its own training galaxies from another.

## Columns

| column | type | content |
|---|---|---|
| `targetid` | int64 | DESI TARGETID |
| `healpix` | int32 | HEALPix pixel, nside 16, nested (the partition of the source table) |
| `ra`, `dec` | float64 | imaging source position, degrees |
| `target_ra`, `target_dec`, `sep_arcsec` | float64, float32 | DESI target position, separation in arcsec |
| `z`, `zerr` | float64 | redshift and its error from the DESI redshift catalogue |
| `survey`, `program` | string | DESI survey and programme |
| `ls_release`, `brickid`, `objid` | int | Legacy Surveys source identity |
| `flux_g`, `flux_r`, `flux_z` | float32 | catalogue fluxes, nanomaggies |
| `ebv` | float32 | Galactic E(B-V) |
| `morphtype` | string | Legacy Surveys Tractor morphology |
| `split` | string | `train` or `test` (see above) |
| `image` | Array3D float32 {tuple(image["shape"])} | (band, y, x), bands {bands}, {image["unit"]}, {image["pixscale_arcsec"]}″/pixel |
| `flux` | float32[{grid["n_wavelength"]}] | spectrum, {blobs["flux"]["unit"]} |
| `ivar` | float32[{grid["n_wavelength"]}] | inverse variance of `flux`, {blobs["ivar"]["unit"]} |
| `mask` | uint8[{grid["n_wavelength"]}] | {blobs["mask"]["meaning"]} |

All spectra share one linear wavelength grid (the three DESI arms merged):
{grid["wavelength_min_angstrom"]:.1f}–{grid["wavelength_max_angstrom"]:.1f} Å in steps of
{step} Å, {grid["n_wavelength"]} pixels. Pixel `i` is at
`{grid["wavelength_min_angstrom"]:.1f} + {step} * i` Å (vacuum).

## Provenance

- DESI data release `{info.release}`, spectroscopic production `{info.specprod}`: healpix
  coadds and the redshift catalogue.
- DESI Legacy Imaging Surveys DR9: sweep catalogues and {bands} image cutouts
  ({image["pixscale_arcsec"]}″/pixel).
- Spectra and imaging sources are matched by position, one to one.

Please acknowledge DESI and the Legacy Surveys as their data policies ask when you use this dataset.

## How to load

```python
from datasets import load_dataset

ds = load_dataset("<repo id or local folder>")  # splits "train" and "test"
train = ds["train"].with_format("numpy")
row = train[0]
row["image"].shape  # (3, 152, 152)
row["flux"].shape  # ({grid["n_wavelength"]},)
```

The shards are plain Parquet (no loading script), so pyarrow, polars and DuckDB read
`{DATA_FOLDER}/*.parquet` directly; `image` is then a nested list and the spectra fixed-size lists.
"""
