"""astroclip embed on real DESI coadds and a real DR9 cutout (tests/data, copied from
../shared/realdata), bad input named by file and problem, --radec through the tiny sample sky,
and astroclip search with a model folder and a file query."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import fitsio
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from astropy.io import fits as afits
from pairs_fixture import micro_model_config, write_pairs_dir

from astroclip_core.cli import main
from astroclip_core.embed import embed_images, embed_spectra, spectra_on_grid
from astroclip_core.errors import FormatError
from astroclip_core.formats.desi import read_coadd_arrays
from astroclip_core.formats.legacysurvey import read_cutout
from astroclip_core.formats.zcatalog import read_zcatalog
from astroclip_core.model.clip import AstroClipModel
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.embeddings import embeddings_table, write_embeddings
from astroclip_core.tables.pairs import read_pairs
from astroclip_core.tables.schemas import object_embeddings_schema
from astroclip_core.training.embed import embed_pairs

DATA = Path(__file__).parent / "data"
COADDS = [DATA / "desi/coadd-sv3-dark-26065.fits", DATA / "desi/coadd-1-80693-thru20210204.fits"]
NO_FIBERMAP = DATA / "desi/everest-80605-0-first25-arms.fits"
CUTOUT = DATA / "legacysurvey/dr9-cutout-357.9087-54.8817.fits"
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained micro model saved as a model folder (the output shapes are what count)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "micro-v1"
    AstroClipModel(micro_model_config()).save_pretrained(str(folder))
    return folder


def _targets(path: Path) -> np.ndarray:
    """TARGETIDs of the target fibres of a coadd, read here with fitsio (the oracle)."""
    fm = fitsio.read(str(path), "FIBERMAP")
    keep = fm["TARGETID"] > 0
    if "OBJTYPE" in fm.dtype.names:  # the everest-era tile coadd has none
        keep &= np.char.strip(fm["OBJTYPE"].astype(str)) == "TGT"
    return fm["TARGETID"][keep].astype(np.int64)


def _embed(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["embed", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_embed_real_coadds_and_cutout(tmp_path: Path, model_dir: Path, capsys) -> None:
    out = tmp_path / "emb.parquet"
    code, stdout, stderr = _embed(
        capsys, "--model", str(model_dir), "--coadd", *map(str, COADDS),
        "--cutout", str(CUTOUT), "--out", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    table = pq.read_table(out)
    dim = micro_model_config().head.embed_dim
    assert table.schema.equals(object_embeddings_schema(dim), check_metadata=False)
    expected = np.concatenate([_targets(p) for p in COADDS])
    n = len(expected)
    assert table.num_rows == n + 1
    assert table.column("targetid").to_pylist()[:n] == expected.tolist()
    assert table.column("targetid")[n].as_py() is None  # a cutout has no DESI target
    sources = table.column("source").to_pylist()
    assert sources[:n] == [f"coadd:{p}" for p in COADDS for _ in _targets(p)]
    assert sources[n] == f"cutout:{CUTOUT}"
    image, spectrum = table.column("image_embedding"), table.column("spectrum_embedding")
    assert image.is_null().to_pylist() == [True] * n + [False]
    assert spectrum.is_null().to_pylist() == [False] * n + [True]
    assert set(table.column("model").to_pylist()) == {"micro-v1"}
    assert "merged onto the 7781-pixel grid" in stderr and f"wrote {n + 1} rows" in stdout

    # The table holds what the Python API gives for the same arrays: unit vectors.
    model = AstroClipModel.from_pretrained(str(model_dir))
    arrays = read_coadd_arrays(COADDS[0], targetids=_targets(COADDS[0]).tolist())
    api = embed_spectra(model, arrays.flux, arrays.ivar, arrays.mask)
    rows = np.stack(spectrum.to_pylist()[: len(api)])
    np.testing.assert_allclose(rows, api, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    cutout = embed_images(model, read_cutout(CUTOUT)[None], name=str(CUTOUT))
    np.testing.assert_allclose(np.array(image[n].as_py()), cutout[0], rtol=0, atol=1e-6)
    ra, dec = table.column("ra")[n].as_py(), table.column("dec")[n].as_py()
    header = afits.getheader(CUTOUT)
    assert abs(ra - header["CRVAL1"]) < 1e-3 and abs(dec - header["CRVAL2"]) < 1e-3


def test_targetids_select_targets(tmp_path: Path, model_dir: Path, capsys) -> None:
    wanted = [int(_targets(COADDS[1])[2]), int(_targets(COADDS[0])[0])]
    out = tmp_path / "some.parquet"
    code, _, stderr = _embed(
        capsys, "--model", str(model_dir), "--coadd", *map(str, COADDS),
        "--targetids", *map(str, wanted), "--out", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    assert sorted(pq.read_table(out).column("targetid").to_pylist()) == sorted(wanted)
    code, _, stderr = _embed(
        capsys, "--model", str(model_dir), "--coadd", str(COADDS[0]),
        "--targetids", "12345", "--out", str(out),
    )  # fmt: skip
    assert code == 1 and "12345" in stderr and str(COADDS[0]) in stderr


def _one_band_cutout(path: Path) -> Path:
    with afits.open(CUTOUT) as hdul:
        header = hdul[0].header.copy()
        header["BANDS"] = "r"
        afits.PrimaryHDU(hdul[0].data[1], header=header).writeto(path)
    return path


def _rescaled_cutout(path: Path, factor: float) -> Path:
    with afits.open(CUTOUT) as hdul:
        header = hdul[0].header.copy()
        for key in ("CD1_1", "CD1_2", "CD2_1", "CD2_2"):
            header[key] = header.get(key, 0.0) * factor
        afits.PrimaryHDU(hdul[0].data, header=header).writeto(path)
    return path


def _shifted_coadd(path: Path, shift_angstrom: float) -> Path:
    shutil.copy(COADDS[0], path)
    path.chmod(0o644)
    with fitsio.FITS(str(path), "rw") as f:
        for arm in "BRZ":
            wave = f[f"{arm}_WAVELENGTH"].read()
            f[f"{arm}_WAVELENGTH"].write(wave + shift_angstrom)
    return path


def test_bad_input_names_the_file_and_the_problem(tmp_path: Path, model_dir: Path, capsys) -> None:
    out = str(tmp_path / "x.parquet")
    cases = [
        (
            ["--coadd", str(NO_FIBERMAP)],
            str(NO_FIBERMAP),
            "missing HDU FIBERMAP, so its spectra have no TARGETID",
        ),
        (["--cutout", str(_one_band_cutout(tmp_path / "r.fits"))], "r.fits", "one band only"),
        (
            ["--cutout", str(_rescaled_cutout(tmp_path / "half.fits", 2.0))],
            "half.fits",
            "wrong pixel scale 0.52",
        ),
        (
            ["--coadd", str(_shifted_coadd(tmp_path / "ir.fits", 5000.0))],
            "ir.fits",
            "cannot be resampled",
        ),
    ]
    for args, name, problem in cases:
        code, _, stderr = _embed(capsys, "--model", str(model_dir), *args, "--out", out)
        assert code == 1, args
        assert name in stderr and problem in stderr, stderr
    assert not Path(out).exists()
    # Arrays: the argument is named, and the grid.
    model = AstroClipModel.from_pretrained(str(model_dir))
    with pytest.raises(FormatError, match="my_spectra: spectra have 5000 pixels, not the 7781"):
        embed_spectra(model, np.ones((2, 5000)), np.ones((2, 5000)), name="my_spectra")
    with pytest.raises(FormatError, match="stamps: .*the model crops the central 144x144"):
        embed_images(model, np.zeros((1, 3, 100, 100)), name="stamps")


def test_a_coadd_off_the_grid_is_resampled_and_says_so(
    tmp_path: Path, model_dir: Path, capsys
) -> None:
    path = _shifted_coadd(tmp_path / "shifted.fits", 0.4)  # half a pixel off every arm grid
    out = tmp_path / "shifted.parquet"
    code, _, stderr = _embed(
        capsys, "--model", str(model_dir), "--coadd", str(path), "--out", str(out)
    )
    assert code == 0, stderr
    assert f"{path}:" in stderr and "resampled onto the 7781-pixel grid" in stderr
    assert "B 2751 pixels 3600.4–5800.4 Å" in stderr
    table = pq.read_table(out)
    assert table.num_rows == len(_targets(COADDS[0]))
    assert table.column("spectrum_embedding").null_count == 0
    # Resampling a spectrum already on the grid's spacing: flux moves by interpolation only.
    arrays = read_coadd_arrays(COADDS[0])
    wave = np.round(3600.0 + 0.8 * np.arange(7781), 4) + 0.4
    flux, ivar, _, note = spectra_on_grid(arrays.flux, arrays.ivar, arrays.mask, wave, "shift")
    assert note.how == "resampled" and flux.shape == (len(arrays.flux), 7781)
    good = ivar[:, 1:] > 0
    assert (ivar[:, 0] == 0).all()  # 3600.0 Å lies outside the shifted range
    np.testing.assert_allclose(
        flux[:, 1:][good],
        (0.5 * arrays.flux[:, :-1] + 0.5 * arrays.flux[:, 1:])[good],
        rtol=1e-5,
        atol=1e-5,
    )


def test_radec_fetches_cutouts_and_spectra_through_the_sample_sky(
    tmp_path: Path, model_dir: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline_support import make_tiny_sky

    sky = make_tiny_sky(tmp_path / "sky", ["edr"])
    zcat_path = next(sky.rglob("zall-pix-*.fits"))
    columns = ["TARGETID", "TARGET_RA", "TARGET_DEC", "ZCAT_PRIMARY"]
    zcat, _ = read_zcatalog(zcat_path, columns=columns, selection=None)
    zcat = zcat.filter(zcat.column("zcat_primary")).slice(0, 2)
    ra, dec = zcat.column("target_ra").to_numpy(), zcat.column("target_dec").to_numpy()
    offset_deg = 0.5 / 3600  # within 1 arcsec of the target
    table = tmp_path / "positions.csv"
    lines = [f"{r + offset_deg / np.cos(np.radians(d))},{d}" for r, d in zip(ra, dec, strict=True)]
    lines.append(f"{ra[0]},{dec[0] + 20 / 3600}")  # 20 arcsec away: no DESI target
    table.write_text("RA,Dec\n" + "\n".join(lines) + "\n")
    storage = tmp_path / "storage"
    monkeypatch.setenv("ASTROCLIP_STORAGE", str(storage))
    out = tmp_path / "radec.parquet"
    code, stdout, stderr = _embed(
        capsys, "--model", str(model_dir), "--radec", str(table), "--sample-sky", str(sky),
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    result = pq.read_table(out)
    assert result.num_rows == 3
    assert result.column("targetid").to_pylist()[:2] == zcat.column("targetid").to_pylist()
    assert result.column("targetid")[2].as_py() is None
    assert result.column("spectrum_embedding").is_null().to_pylist() == [False, False, True]
    assert result.column("image_embedding").null_count == 0
    assert result.column("source").to_pylist() == [f"radec:{table}:{i}" for i in range(3)]
    assert result.column("z").null_count == 1
    # Fetched through the sources into the cache, as the ingest caches them.
    assert list((storage / "raw" / "desi").rglob("coadd-*.fits"))
    assert list((storage / "raw" / "legacysurvey").rglob("*.fits"))
    assert "radec: 3 object(s), 3 image and 2 spectrum embedding(s)" in stdout


def test_search_with_a_model_folder_and_a_cutout_query(
    tmp_path: Path, model_dir: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = StorageLayout(str(tmp_path / "storage"))
    write_pairs_dir(Path(layout.pairs_dir("edr")), 12, pixels=(7,))
    pairs = read_pairs(layout.pairs_file("edr", 7))
    model = AstroClipModel.from_pretrained(str(model_dir))
    image_emb, spectrum_emb = embed_pairs(model, pairs)
    write_embeddings(
        layout, "edr", "micro-v1", 7, embeddings_table(pairs, image_emb, spectrum_emb, "micro-v1")
    )
    monkeypatch.setenv("ASTROCLIP_STORAGE", layout.root)
    args = ["search", "--model", str(model_dir), "--cutout", str(CUTOUT), "--k", "3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"image of {CUTOUT} -> spectrum bank (12 rows" in printed
    rows = [line for line in printed.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 3
    query = embed_images(model, read_cutout(CUTOUT)[None])[0]
    best = int(np.argmax(spectrum_emb @ query))
    assert rows[0].split()[1] == str(pairs.column("targetid")[best].as_py())
