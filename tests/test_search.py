"""EmbeddingIndex (exact and faiss paths) and the `astroclip search` command."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from astroclip_core import search
from astroclip_core.evaluation.synthetic import synthetic_embeddings, synthetic_pairs_pixels
from astroclip_core.search import EmbeddingIndex, add_search_arguments, search_command
from astroclip_core.storage import partition_file
from astroclip_core.tables.embeddings import embedding_matrix


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return synthetic_embeddings(300, dim=16, informative=True, seed=7)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_matches_brute_force_and_excludes_self(table: pa.Table) -> None:
    index = EmbeddingIndex.from_table(table, method="exact")
    tid = table.column("targetid")[5].as_py()
    result = index.query_targetid(tid, k=8, query_modality="spectrum", bank_modality="spectrum")
    vectors = _unit(embedding_matrix(table, "spectrum_embedding").astype(np.float64))
    sims = vectors @ vectors[5]
    sims[5] = -np.inf  # the query itself is left out
    expected = np.argsort(-sims)[:8]
    ids = table.column("targetid").to_numpy()
    assert result.column("targetid").to_pylist() == ids[expected].tolist()
    np.testing.assert_allclose(result.column("similarity").to_numpy(), sims[expected], rtol=1e-5)
    assert result.column("rank").to_pylist() == list(range(1, 9))
    assert result.column_names == ["targetid", "ra", "dec", "z", "similarity", "distance", "rank"]
    d = result.column("distance").to_numpy()
    np.testing.assert_allclose(d, np.sqrt(2 - 2 * sims[expected]), atol=1e-3)


def test_cross_modal_keeps_the_partner_first(table: pa.Table) -> None:
    index = EmbeddingIndex.from_table(table)
    assert index.method == "exact"  # small table
    for row in (0, 100, 299):
        tid = table.column("targetid")[row].as_py()
        result = index.query_targetid(tid, k=3, query_modality="image", bank_modality="spectrum")
        assert result.column("targetid")[0].as_py() == tid


@pytest.mark.skipif(not search.faiss_available(), reason="faiss-cpu not installed")
def test_faiss_index_path_returns_the_exact_neighbours(table: pa.Table) -> None:
    exact = EmbeddingIndex(table, method="exact")
    indexed = EmbeddingIndex(table, method="faiss")
    assert indexed.method == "faiss"
    for row in (3, 150, 280):
        tid = table.column("targetid")[row].as_py()
        for q, b in (("image", "spectrum"), ("image", "image"), ("spectrum", "image")):
            a = exact.query_targetid(tid, k=10, query_modality=q, bank_modality=b)
            f = indexed.query_targetid(tid, k=10, query_modality=q, bank_modality=b)
            assert a.column("targetid").to_pylist() == f.column("targetid").to_pylist()
            np.testing.assert_allclose(
                a.column("similarity").to_numpy(), f.column("similarity").to_numpy(), atol=1e-5
            )


@pytest.mark.skipif(not search.faiss_available(), reason="faiss-cpu not installed")
def test_auto_switches_to_the_index_above_the_threshold(
    table: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "INDEX_THRESHOLD_ROWS", 100)
    assert EmbeddingIndex(table).method == "faiss"


def test_query_vector_needs_no_normalisation(table: pa.Table) -> None:
    index = EmbeddingIndex(table)
    vec = embedding_matrix(table, "image_embedding")[42] * 7.5
    result = index.query_vector(vec, k=4, bank_modality="image")
    assert result.column("targetid")[0].as_py() == table.column("targetid")[42].as_py()
    assert result.column("similarity")[0].as_py() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="dim 3"):
        index.query_vector(np.ones(3), k=2)


def test_errors_name_the_problem(table: pa.Table) -> None:
    index = EmbeddingIndex(table)
    with pytest.raises(KeyError, match="targetid 1 is not"):
        index.query_targetid(1)
    with pytest.raises(ValueError, match="modality 'sound'"):
        index.query_targetid(table.column("targetid")[0].as_py(), bank_modality="sound")
    with pytest.raises(ValueError, match="duplicate targetids"):
        EmbeddingIndex(pa.concat_tables([table, table.slice(0, 1)]))
    with pytest.raises(FileNotFoundError, match="no embeddings at"):
        EmbeddingIndex.from_table("/nonexistent/embeddings/edr/m")


def _write_hive(table: pa.Table, root: str) -> None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(root)
    for pixel, part in ((1, table.slice(0, 120)), (2, table.slice(120))):
        file = partition_file(path, pixel)
        fs.makedirs(file.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(file, "wb") as fh:
            pq.write_table(part, fh)


@pytest.mark.parametrize("scheme", ["local", "memory"])
def test_from_hive_folder(table: pa.Table, tmp_path: Path, scheme: str) -> None:
    root = str(tmp_path / "emb") if scheme == "local" else "memory://search-test/emb"
    _write_hive(table, root)
    index = EmbeddingIndex.from_table(root)
    assert len(index) == 300
    tid = table.column("targetid")[200].as_py()
    assert index.query_targetid(tid, k=1).column("targetid")[0].as_py() == tid


def _args(**kw: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_search_arguments(parser)
    argv = []
    for key, value in kw.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return parser.parse_args(argv)


def test_search_command_prints_table_and_writes_png(
    table: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emb_dir = str(tmp_path / "emb")
    _write_hive(table, emb_dir)
    tid = table.column("targetid")[10].as_py()
    expected = EmbeddingIndex(table).query_targetid(tid, k=3).column("targetid").to_pylist()
    wanted = pa.array([tid, *expected])
    pairs_file = Path(partition_file(str(tmp_path / "pairs"), 1))
    pairs_file.parent.mkdir(parents=True)
    subset = table.filter(pc.is_in(table.column("targetid"), wanted))
    pq.write_table(synthetic_pairs_pixels(subset), pairs_file)
    png = tmp_path / "out" / "neighbours.png"

    code = search_command(
        _args(embeddings=emb_dir, targetid=tid, k=3, png=png, pairs=tmp_path / "pairs")
    )
    out = capsys.readouterr().out
    assert code == 0
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[1]) for r in rows] == expected
    assert png.read_bytes().startswith(b"\x89PNG")


def test_search_command_reports_bad_input(
    table: pa.Table,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emb_dir = str(tmp_path / "emb")
    _write_hive(table, emb_dir)
    assert search_command(_args(embeddings=emb_dir, targetid=99)) == 2
    assert "targetid 99" in capsys.readouterr().err
    monkeypatch.setenv("ASTROCLIP_STORAGE", str(tmp_path / "empty-storage"))
    assert search_command(_args(targetid=99)) == 2  # no model to pick
    assert "--model" in capsys.readouterr().err


def test_search_command_picks_the_release_only_model(
    table: pa.Table,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from astroclip_core.storage import StorageLayout

    monkeypatch.setenv("ASTROCLIP_STORAGE", str(tmp_path))
    _write_hive(table, StorageLayout(str(tmp_path)).embeddings_dir("edr", "tiny-v9"))
    first = table.column("targetid")[0].as_py()
    assert search_command(_args(targetid=first)) == 0
    assert "tiny-v9" in capsys.readouterr().out


@pytest.mark.skipif(not search.faiss_available(), reason="faiss-cpu not installed")
def test_faiss_probing_part_of_the_cells_still_finds_the_neighbours() -> None:
    big = synthetic_embeddings(3000, dim=16, informative=True, seed=8)
    exact = EmbeddingIndex(big, method="exact")
    indexed = EmbeddingIndex(big, method="faiss")
    ids = big.column("targetid").to_pylist()[::300]
    found = [
        len(
            set(exact.query_targetid(t, k=10).column("targetid").to_pylist())
            & set(indexed.query_targetid(t, k=10).column("targetid").to_pylist())
        )
        for t in ids
    ]
    probed = indexed._faiss_index("spectrum")
    assert probed.nprobe < probed.nlist  # really the approximate path
    assert sum(found) / (10 * len(ids)) >= 0.9
