"""Model folders: save_pretrained -> from_pretrained, old model.pt files, the Hub (loopback fake),
the training asset's push and the card the evaluation rewrites."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import huggingface_hub
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from fake_hub import FakeHub
from pairs_fixture import micro_model_config, write_pairs_dir

from astroclip_core.cli import main
from astroclip_core.embed import embed_images
from astroclip_core.errors import FormatError
from astroclip_core.evaluation.steps import evaluate_release
from astroclip_core.formats.legacysurvey import read_cutout
from astroclip_core.model.clip import AstroClipModel
from astroclip_core.model.pretrained import CONFIG_NAME, WEIGHTS_NAME, model_label
from astroclip_core.publish.hub import HubSettings
from astroclip_core.publish.model_hub import model_hub_settings_from_env, push_model_folder
from astroclip_core.storage import StorageLayout
from astroclip_core.training.checkpoint import save_model
from astroclip_core.training.steps import embed_partition
from pipelines import training
from pipelines.resources import StorageResource

RELEASE, MODEL, REPO_ID = "edr", "micro-v1", "astroclip-test/micro-model"
CUTOUT = Path(__file__).parent / "data/legacysurvey/dr9-cutout-357.9087-54.8817.fits"


def _model(seed: int = 0) -> AstroClipModel:
    torch.manual_seed(seed)
    return AstroClipModel(micro_model_config()).eval()


def _inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(3, 3, 152, 152, generator=gen) * 0.05  # (B, 3, H, W) nanomaggies
    flux = torch.randn(3, 7781, generator=gen)  # (B, L)
    valid = torch.rand(3, 7781, generator=gen) > 0.05
    return image, flux, valid


def _outputs(model: AstroClipModel) -> tuple[torch.Tensor, torch.Tensor]:
    image, flux, valid = _inputs()
    with torch.no_grad():
        return model.encode_image(image), model.encode_spectrum(flux, valid)


def _same(a: AstroClipModel, b: AstroClipModel) -> bool:
    (ia, sa), (ib, sb) = _outputs(a), _outputs(b)
    return torch.equal(ia, ib) and torch.equal(sa, sb)


def test_save_pretrained_then_from_pretrained_gives_identical_outputs(tmp_path: Path) -> None:
    model = _model()
    written = model.save_pretrained(str(tmp_path / "m"), training={"steps": 3}, extra={"steps": 3})
    assert sorted(Path(p).name for p in written.values()) == [CONFIG_NAME, WEIGHTS_NAME]
    config = json.loads((tmp_path / "m" / CONFIG_NAME).read_text())
    assert config["training"] == {"steps": 3} and config["steps"] == 3
    for source in (tmp_path / "m", tmp_path / "m" / WEIGHTS_NAME):
        loaded = AstroClipModel.from_pretrained(str(source))
        assert loaded.config == model.config and not loaded.training
        assert _same(model, loaded)
    assert not _same(model, _model(seed=1))  # the check can fail: other weights differ
    assert model_label(tmp_path / "m" / WEIGHTS_NAME) == "m" and model_label(REPO_ID) == REPO_ID


def test_an_old_model_pt_still_loads(tmp_path: Path) -> None:
    model = _model()
    save_model(str(tmp_path / "old" / "model.pt"), model, extra={"steps": 5})
    for source in (tmp_path / "old", tmp_path / "old" / "model.pt"):
        assert _same(model, AstroClipModel.from_pretrained(str(source)))


def test_bad_model_folders_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty is not a model folder"):
        AstroClipModel.from_pretrained(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="neither a model folder"):
        AstroClipModel.from_pretrained(str(tmp_path / "no" / "such" / "place"))
    folder = tmp_path / "m"
    _model().save_pretrained(str(folder))
    (folder / CONFIG_NAME).write_text(json.dumps({"out_dir": "x", "seed": 0}))
    with pytest.raises(FormatError, match=f"{folder / CONFIG_NAME}.*not a model config"):
        AstroClipModel.from_pretrained(str(folder))
    other = micro_model_config().to_dict()
    other["head"]["embed_dim"] = 16
    (folder / CONFIG_NAME).write_text(
        json.dumps({"format": "astroclip-model", "format_version": 1, "model_config": other})
    )
    with pytest.raises(FormatError, match=f"{folder / WEIGHTS_NAME}: weights do not fit"):
        AstroClipModel.from_pretrained(str(folder))


def test_from_pretrained_with_a_hub_repo_id(tmp_path: Path, token: str, online: None) -> None:
    model = _model()
    folder = tmp_path / "m"
    model.save_pretrained(str(folder))
    (folder / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# card\n")
    with FakeHub(token) as fake:
        settings = HubSettings(REPO_ID, token, fake.endpoint)
        pushed = push_model_folder(str(folder), settings)
        assert pushed.pushed and fake.repo_types[REPO_ID] == "model"
        assert set(fake.repos[REPO_ID]) == {"README.md", CONFIG_NAME, WEIGHTS_NAME}
        loaded = AstroClipModel.from_pretrained(
            REPO_ID, token=token, endpoint=fake.endpoint, cache_dir=str(tmp_path / "cache")
        )
        assert any("/resolve/" in r.path for r in fake.requests)
        with pytest.raises(FileNotFoundError, match="astroclip-test/missing") as missing:
            AstroClipModel.from_pretrained(
                "astroclip-test/missing",
                token=token,
                endpoint=fake.endpoint,
                cache_dir=str(tmp_path / "cache"),
            )
    assert _same(model, loaded)
    assert token not in str(missing.value)


def test_embed_command_takes_a_hub_repo_id(
    tmp_path: Path, token: str, online: None, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    model = _model()
    model.save_pretrained(str(tmp_path / "m"))
    (tmp_path / "m" / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# card\n")
    out = tmp_path / "emb.parquet"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with FakeHub(token) as fake:
        push_model_folder(str(tmp_path / "m"), HubSettings(REPO_ID, token, fake.endpoint))
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        monkeypatch.setenv("HF_TOKEN", token)
        code = main(["embed", "--model", REPO_ID, "--cutout", str(CUTOUT), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = pq.read_table(out)
    assert table.column("model").to_pylist() == [REPO_ID]
    expected = embed_images(model, read_cutout(CUTOUT)[None])
    np.testing.assert_allclose(np.array(table.column("image_embedding")[0].as_py()), expected[0])
    assert token not in captured.out + captured.err


def _materialize(instance: dg.DagsterInstance, root: Path, preset: Path):
    if not instance.has_dynamic_partition("releases", RELEASE):
        instance.add_dynamic_partitions("releases", [RELEASE])
    config = {"preset": str(preset), "steps": 4, "batch_size": 4, "device": "cpu"}
    return dg.materialize(
        [training.contrastive_model],
        partition_key=RELEASE,
        instance=instance,
        resources={"storage": StorageResource(root=str(root))},
        run_config={"ops": {"contrastive_model": {"config": config}}},
        raise_on_error=False,
    )


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_training_asset_pushes_the_model_folder_and_never_the_token(
    tmp_path: Path, token: str, online: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "storage"
    layout = StorageLayout(str(root))
    write_pairs_dir(Path(layout.pairs_dir(RELEASE)), 24, pixels=(41, 42))
    preset = tmp_path / "micro.json"
    preset.write_text(json.dumps(micro_model_config().to_dict()))
    with FakeHub(token) as fake, dg.DagsterInstance.ephemeral() as instance:
        monkeypatch.setenv("HF_MODEL_REPO_ID", REPO_ID)
        monkeypatch.setenv("HF_TOKEN", token)
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        assert model_hub_settings_from_env() == HubSettings(REPO_ID, token, fake.endpoint)
        result = _materialize(instance, root, preset)
        assert result.success
        logs = [str(entry) for entry in instance.all_logs(result.run_id)]
        md = result.asset_materializations_for_node("contrastive_model")[0].metadata
        pushed = dict(fake.repos[REPO_ID])
        assert {r.authorization for r in fake.requests} == {f"Bearer {token}"}

    folder = Path(layout.model_dir(RELEASE, MODEL))
    local = _tree_bytes(folder)
    assert {"README.md", CONFIG_NAME, WEIGHTS_NAME} <= set(pushed)
    assert pushed == {name: local[name] for name in pushed}  # the folder, as published
    card = local["README.md"].decode()
    assert "`edr`" in card and "| steps | 4 |" in card and "Not evaluated yet" in card
    assert md["model_pushed"].value is True and md["model_repo_id"].value == REPO_ID
    loaded = AstroClipModel.from_pretrained(str(folder))
    assert loaded.config == micro_model_config()

    encoded = token.encode()
    leaks = [name for name, data in _tree_bytes(tmp_path).items() if encoded in data]
    assert leaks == [], f"the token reached {leaks}"
    assert not any(encoded in data for data in pushed.values())
    assert not any(token in line for line in logs)
    assert all(token not in str(value.value) for value in md.values())
    assert any("model push: pushed" in line for line in logs)

    # The evaluation writes the report, then the card with its table.
    for pixel in (41, 42):
        embed_partition(layout, RELEASE, pixel)
    evaluated = evaluate_release(layout, RELEASE, MODEL, k=4)
    report = json.loads(Path(evaluated.outputs["report"]).read_text())
    card = Path(evaluated.outputs["model_card"]).read_text()
    assert "Not evaluated yet" not in card
    r2 = report["redshift.spectrum.r2"]
    assert f"| spectrum embedding | {'–' if r2 is None else format(r2, '.3f')} |" in card
    assert f"n_test = {report['n_test']}" in card
    assert np.isfinite(report["n_train"])


def test_no_model_push_without_settings(tmp_path: Path) -> None:
    assert model_hub_settings_from_env({"HF_TOKEN": "hf_x"}) is None
    assert model_hub_settings_from_env({"HF_MODEL_REPO_ID": REPO_ID}) is None
    result = push_model_folder(str(tmp_path), None)
    assert not result.pushed and "HF_MODEL_REPO_ID" in result.reason
