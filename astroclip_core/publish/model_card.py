"""The model card (``README.md`` of a model folder): what it was trained on and how well it does.

The card states the training data and release, the preset, the steps and batch, the parameter
counts and the evaluation table. Training writes the card when it publishes the model, before
any evaluation exists, so that card says the model is not evaluated yet; the evaluation step
rewrites it from the report it has just written (:func:`refresh_model_card`). Everything on
the card comes from the folder's ``config.json`` and the release's ``evaluation.json``, never
from the environment, so no secret can reach it.
"""

from __future__ import annotations

import json

import yaml

from astroclip_core import fsio
from astroclip_core.model.config import ModelConfig
from astroclip_core.model.pretrained import CARD_NAME, read_model_config
from astroclip_core.publish.card import LICENSE
from astroclip_core.storage import StorageLayout

MODEL_TAGS = (
    "astronomy",
    "astrophysics",
    "galaxies",
    "multimodal",
    "contrastive-learning",
    "desi",
    "legacy-surveys",
    "astroclip",
)
_QUERIES = (
    ("spectrum", "spectrum embedding"),
    ("image", "image embedding"),
    ("image_to_spectrum", "image query → spectrum bank"),
    ("photometry", "catalogue photometry (g−r, r−z, z)"),
)
_PROPERTIES = (
    ("log_mstar", "log stellar mass"),
    ("log_ssfr", "log sSFR"),
    ("metallicity", "metallicity"),
)


def _num(value: object, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def evaluation_markdown(report: dict | None) -> str:
    """The card's evaluation section from a flat ``evaluation.json`` object (None: not yet)."""
    if not report:
        return (
            "Not evaluated yet: the evaluation step rewrites this section from "
            "`reports/<release>/<model>/evaluation.json` when it runs.\n"
        )
    lines = [
        f"Zero-shot k-NN (k = {report.get('k')}) on the release's test split "
        f"(n_train = {report.get('n_train')}, n_test = {report.get('n_test')}); "
        "`evaluation.json` has every figure.",
        "",
        "| redshift | R² | σ_NMAD | outliers |",
        "|---|---|---|---|",
    ]
    for key, label in _QUERIES:
        if f"redshift.{key}.r2" not in report:
            continue
        outliers = report.get(f"redshift.{key}.outlier_fraction")
        lines.append(
            f"| {label} | {_num(report.get(f'redshift.{key}.r2'), '.3f')} | "
            f"{_num(report.get(f'redshift.{key}.sigma_nmad'), '.3f')} | "
            f"{'–' if outliers is None else f'{100 * outliers:.1f}%'} |"
        )
    props = [(p, label) for p, label in _PROPERTIES if f"{p}.spectrum.r2" in report]
    if props:
        lines += ["", "| R² | " + " | ".join(label for _, label in _QUERIES) + " |"]
        lines.append("|---" * (len(_QUERIES) + 1) + "|")
        for prop, label in props:
            cells = [_num(report.get(f"{prop}.{key}.r2"), ".3f") for key, _ in _QUERIES]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if "retrieval.image_to_spectrum.median_rank" in report:
        lines += [
            "",
            "Image → spectrum retrieval on the test split: median rank "
            f"{report.get('retrieval.image_to_spectrum.median_rank')}, recall@1 "
            f"{_num(report.get('retrieval.image_to_spectrum.recall_at_1'), '.2f')}, recall@10 "
            f"{_num(report.get('retrieval.image_to_spectrum.recall_at_10'), '.2f')}.",
        ]
    return "\n".join(lines) + "\n"


def model_card(name: str, release: str, config: dict, report: dict | None = None) -> str:
    """The card text of model ``name`` trained on ``release``; ``config`` is its folder's
    ``config.json`` object and ``report`` the flat evaluation report (or None)."""
    training = config.get("training") or {}
    preset = training.get("model")
    preset_text = f"`{preset}`" if isinstance(preset, str) else "a custom ModelConfig"
    model_cfg = ModelConfig.from_dict(config["model_config"])
    if training.get("hf_dir"):
        data = f"the published Hugging Face dataset of release `{release}` (train shards)"
    elif training.get("pairs_dir"):
        data = f"the pairs table of release `{release}` (train split)"
    else:
        data = (
            f"{len(training.get('files') or [])} pairs files of release `{release}` (train split)"
        )
    meta = {
        "license": LICENSE,
        "library_name": "pytorch",
        "pipeline_tag": "feature-extraction",
        "tags": list(MODEL_TAGS),
    }
    steps = config.get("steps", training.get("steps"))
    rows = [
        ("release", f"`{release}`"),
        ("training data", data),
        ("preset", preset_text),
        ("steps", f"{steps}"),
        ("batch size", f"{training.get('batch_size')} per process"),
        ("learning rate", f"{training.get('lr')} (AdamW, warmup + cosine)"),
        ("seed", f"{training.get('seed')}"),
        ("embedding dimension", f"{model_cfg.head.embed_dim}"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (
        f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n"
        f"# AstroCLIP model `{name}`\n\n"
        "A CLIP-style image–spectrum model: Legacy Surveys DR9 g,r,z cutouts (nanomaggies, "
        "0.262″ pixels) and DESI spectra (7781 pixels, 3600–9824 Å at 0.8 Å) embedded in one "
        "shared space, trained by the AstroCLIP pipeline.\n\n"
        f"## Training\n\n| | |\n|---|---|\n{table}\n\n"
        f"## Evaluation\n\n{evaluation_markdown(report)}\n"
        "## Use\n\n"
        "```python\n"
        "from astroclip_core.model.clip import AstroClipModel\n\n"
        f'model = AstroClipModel.from_pretrained("<this folder or Hub repo id>")\n'
        "```\n\n"
        "or `astroclip embed --model <folder or repo id> --cutout FILE --out emb.parquet`.\n"
        "`config.json` holds the model and training config; `model.safetensors` the weights.\n"
    )


def write_model_card(folder: str, name: str, release: str, report: dict | None = None) -> str:
    """Write ``README.md`` into the model folder from its ``config.json``; return its URL."""
    url = f"{folder.rstrip('/')}/{CARD_NAME}"
    card = model_card(name, release, read_model_config(folder), report)
    fsio.atomic_write_bytes(url, card.encode())
    return url


def refresh_model_card(layout: StorageLayout, release: str, model: str) -> str:
    """Rewrite the card of the release's model ``model`` with its evaluation report (written by
    the evaluation step); return the card's URL."""
    report_url = f"{layout.report_dir(release, model)}/evaluation.json"
    report = json.loads(fsio.read_bytes(report_url)) if fsio.exists(report_url) else None
    return write_model_card(layout.model_dir(release, model), model, release, report)
