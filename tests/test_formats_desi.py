"""DESI readers/writers against the real fuji files and the desispec merge oracle."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import fitsio
import numpy as np
import pyarrow as pa
import pytest

from astroclip_core.formats.desi import (
    ARM_GRIDS_ANGSTROM,
    ARMS,
    FIBERMAP_COLUMNS,
    N_WAVELENGTH,
    REDSHIFTS_COLUMNS,
    WAVELENGTH,
    ZCATALOG_COLUMNS,
    GalaxySelection,
    arm_wavelength,
    merge_arms,
    read_coadd,
    read_coadd_arrays,
    read_redrock,
    read_zcatalog,
    write_coadd,
    write_redrock,
    write_zcatalog,
)
from astroclip_core.formats.desi_columns import blank_columns

DATA = Path(__file__).parent / "data" / "desi"
REAL_COADD = DATA / "coadd-sv3-dark-26065.fits"
REFERENCE = DATA / "coadd-sv3-dark-26065.brz-reference.npz"
REAL_REDROCK = DATA / "redrock-test.fits"


def naive_merge(flux: dict, ivar: dict, mask: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The coadd_cameras rule written pixel by pixel from wavelength matching (test oracle)."""
    n = len(flux["B"])
    num = np.zeros((n, N_WAVELENGTH))
    iv = np.zeros((n, N_WAVELENGTH))
    m = np.zeros((n, N_WAVELENGTH), dtype=np.uint32)
    count = np.zeros(N_WAVELENGTH, dtype=int)
    for arm in ARMS:
        idx = np.searchsorted(WAVELENGTH, arm_wavelength(arm))
        num[:, idx] += flux[arm].astype(np.float64) * ivar[arm]
        iv[:, idx] += ivar[arm]
        m[:, idx] |= mask[arm]
        count[idx] += 1
    merged = np.zeros((n, N_WAVELENGTH))
    for arm in ARMS:  # single-arm pixels are copies, even where ivar == 0
        idx = np.searchsorted(WAVELENGTH, arm_wavelength(arm))
        single = count[idx] == 1
        merged[:, idx[single]] = flux[arm][:, single]
    both = count == 2
    merged[:, both] = np.where(
        iv[:, both] > 0, num[:, both] / np.where(iv[:, both] > 0, iv[:, both], 1), 0
    )
    m[iv > 0] = 0
    return merged, iv, m


def random_arms(n: int, seed: int) -> tuple[dict, dict, dict]:
    """Random arm arrays with zero-ivar pixels (some masked, some not) in and out of overlaps."""
    rng = np.random.default_rng(seed)
    flux, ivar, mask = {}, {}, {}
    for arm in ARMS:
        shape = (n, ARM_GRIDS_ANGSTROM[arm][2])
        flux[arm] = rng.normal(1.0, 1.0, shape).astype(np.float32)
        ivar[arm] = rng.uniform(0.1, 4.0, shape).astype(np.float32)
        dead = rng.random(shape) < 0.2
        ivar[arm][dead] = 0.0
        mask[arm] = np.where(rng.random(shape) < 0.3, np.uint32(1 << 16 | 4), np.uint32(0))
    return flux, ivar, mask


def small_fibermap(n: int) -> dict[str, np.ndarray]:
    cols = blank_columns(FIBERMAP_COLUMNS, n)
    cols["TARGETID"] = np.arange(n, dtype=np.int64) * 7 + 1000
    cols["TARGET_RA"] = np.linspace(10.0, 10.1, n)
    cols["TARGET_DEC"] = np.linspace(-5.0, -4.9, n)
    cols["OBJTYPE"] = np.array(["TGT", "SKY", "TGT", "TGT"][:n] + ["TGT"] * max(0, n - 4))
    cols["BRICKNAME"] = "0101m050"
    cols["RELEASE"] = 9010
    cols["FLUX_R"] = np.arange(n, dtype=np.float32)
    return cols


def test_real_coadd_matches_desispec_reference() -> None:
    ref = np.load(REFERENCE)
    arrays = read_coadd_arrays(REAL_COADD)
    np.testing.assert_array_equal(arrays.targetid, ref["targetid"])
    np.testing.assert_allclose(WAVELENGTH, ref["wave"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(arrays.flux, ref["flux"], rtol=1e-5, atol=0)
    np.testing.assert_allclose(arrays.ivar, ref["ivar"], rtol=1e-5, atol=0)
    np.testing.assert_array_equal(arrays.mask != 0, ref["mask"] != 0)
    assert (ref["mask"] != 0).any()  # the oracle exercises masked pixels


def test_read_coadd_arrow_columns() -> None:
    table = read_coadd(REAL_COADD)
    assert table.column_names[:6] == ["targetid", "target_ra", "target_dec", "flux", "ivar", "mask"]
    assert table.schema.field("targetid").type == pa.int64()
    assert table.schema.field("flux").type == pa.list_(pa.float32(), N_WAVELENGTH)
    assert table["objtype"].to_pylist() == ["", "", "TGT", "SKY", "TGT"]
    assert table["brickname"][2].as_py() == "2169p032"
    ref = np.load(REFERENCE)
    flux = np.stack(table["flux"].to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(flux, ref["flux"], rtol=1e-5)


def test_targetid_selection_returns_file_order_rows() -> None:
    full = read_coadd_arrays(REAL_COADD)
    wanted = [39627866878514741, -2713437, 616088619186127404]  # rows 5, 1, 4 of the file
    part = read_coadd_arrays(REAL_COADD, targetids=wanted)
    rows = [0, 3, 4]  # file order
    np.testing.assert_array_equal(part.targetid, full.targetid[rows])
    np.testing.assert_array_equal(part.flux, full.flux[rows])
    np.testing.assert_array_equal(part.ivar, full.ivar[rows])
    np.testing.assert_array_equal(part.mask, full.mask[rows])
    assert part.fibermap["target_ra"].to_pylist() == [
        full.fibermap["target_ra"][i].as_py() for i in rows
    ]


def test_targetid_absent_raises() -> None:
    with pytest.raises(KeyError, match="not in FIBERMAP"):
        read_coadd_arrays(REAL_COADD, targetids=[12345])


def test_merge_arms_matches_pixelwise_rule() -> None:
    flux, ivar, mask = random_arms(6, seed=1)
    got_flux, got_ivar, got_mask = merge_arms(flux, ivar, mask)
    want_flux, want_ivar, want_mask = naive_merge(flux, ivar, mask)
    np.testing.assert_allclose(got_flux, want_flux, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got_ivar, want_ivar, rtol=1e-6)
    np.testing.assert_array_equal(got_mask, want_mask)
    overlap = slice(2700, 2751)  # 5760-5800 A, both-ivar-zero pixels must give flux 0
    both_dead = want_ivar[:, overlap] == 0
    assert both_dead.any() and (got_flux[:, overlap][both_dead] == 0).all()


def test_write_coadd_roundtrip(tmp_path: Path) -> None:
    n = 4
    flux, ivar, mask = random_arms(n, seed=2)
    fibermap = small_fibermap(n)
    path = tmp_path / "coadd-sv3-dark-123.fits"
    write_coadd(
        path,
        fibermap,
        flux,
        ivar,
        mask,
        header={"HPXPIXEL": 123, "SURVEY": "sv3", "PROGRAM": "dark"},
    )
    table = read_coadd(path)
    want_flux, want_ivar, want_mask = naive_merge(flux, ivar, mask)
    np.testing.assert_allclose(
        np.stack(table["flux"].to_numpy(zero_copy_only=False)), want_flux, rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(
        np.stack(table["ivar"].to_numpy(zero_copy_only=False)), want_ivar, rtol=1e-6
    )
    np.testing.assert_array_equal(np.stack(table["mask"].to_numpy(zero_copy_only=False)), want_mask)
    assert table["targetid"].to_pylist() == fibermap["TARGETID"].tolist()
    assert table["objtype"].to_pylist() == ["TGT", "SKY", "TGT", "TGT"]
    assert table["flux_r"].to_pylist() == [0.0, 1.0, 2.0, 3.0]


def test_write_coadd_layout_like_real_file(tmp_path: Path) -> None:
    path = tmp_path / "coadd.fits"
    flux, ivar, mask = random_arms(3, seed=3)
    write_coadd(
        path,
        small_fibermap(3),
        flux,
        ivar,
        mask,
        header={"HPXPIXEL": 5, "SURVEY": "main", "PROGRAM": "dark"},
    )
    with fitsio.FITS(str(path)) as ours, fitsio.FITS(str(REAL_COADD)) as real:
        assert [h.get_extname() for h in ours] == [h.get_extname() for h in real]
        for name in ("B_FLUX", "B_IVAR", "B_WAVELENGTH"):
            assert ours[name].read_header()["BUNIT"] == real[name].read_header()["BUNIT"]
        primary = ours[0].read_header()
        assert (primary["SPGRP"], primary["HPXPIXEL"], primary["HPXNSIDE"]) == ("healpix", 5, 64)
        assert primary["SURVEY"] == "main"
        real_fm = real["FIBERMAP"].get_rec_dtype()[0]
        for name, dtype in ours["FIBERMAP"].get_rec_dtype()[0].descr:
            assert real_fm[name].str == dtype, name  # same dtype as the real FIBERMAP
        res = ours["R_RESOLUTION"].read()
        assert res.shape == (3, 11, ARM_GRIDS_ANGSTROM["R"][2])
        np.testing.assert_allclose(res.sum(axis=1), 1.0, rtol=1e-5)
        assert res[0, 5, 0] > res[0, 4, 0] > res[0, 3, 0]  # peaked on the main diagonal


def test_write_coadd_of_real_arrays_equals_reference(tmp_path: Path) -> None:
    with fitsio.FITS(str(REAL_COADD)) as real:
        rec = real["FIBERMAP"].read()
        fibermap = {name: rec[name] for name in FIBERMAP_COLUMNS}
        arms = {
            k: {a: real[f"{a}_{k}"].read() for a in ARMS}
            for k in ("FLUX", "IVAR", "MASK", "RESOLUTION")
        }
    path = tmp_path / "rewritten.fits"
    write_coadd(
        path, fibermap, arms["FLUX"], arms["IVAR"], arms["MASK"], resolution=arms["RESOLUTION"]
    )
    ref = np.load(REFERENCE)
    arrays = read_coadd_arrays(path)
    np.testing.assert_allclose(arrays.flux, ref["flux"], rtol=1e-5, atol=0)
    np.testing.assert_allclose(arrays.ivar, ref["ivar"], rtol=1e-5, atol=0)
    np.testing.assert_array_equal(arrays.mask != 0, ref["mask"] != 0)
    np.testing.assert_array_equal(fitsio.read(str(path), "Z_RESOLUTION"), arms["RESOLUTION"]["Z"])


def test_real_redrock() -> None:
    table = read_redrock(REAL_REDROCK)
    np.testing.assert_allclose(table["z"].to_numpy(), [1.328, 0.157, 0.0], atol=1e-3)
    assert table["zwarn"].to_pylist() == [1, 0, 0]
    assert table["spectype"].to_pylist() == ["GALAXY"] * 3
    assert table.schema.field("coeff").type == pa.list_(pa.float64(), 10)


def test_redrock_columns_follow_real_file() -> None:
    with fitsio.FITS(str(REAL_REDROCK)) as real:
        dtype = real["REDSHIFTS"].get_rec_dtype()[0]
    assert list(REDSHIFTS_COLUMNS) == list(dtype.names)
    assert all(np.dtype(REDSHIFTS_COLUMNS[name]) == dtype[name] for name in dtype.names)


def test_redrock_roundtrip(tmp_path: Path) -> None:
    n = 3
    z = blank_columns(REDSHIFTS_COLUMNS, n)
    z["TARGETID"] = np.array([5, 6, 7])
    z["Z"] = np.array([0.1, 0.5, 1.2])
    z["ZWARN"] = np.array([0, 4, 0])
    z["COEFF"] = np.arange(30.0).reshape(3, 10)
    z["SPECTYPE"] = np.array(["GALAXY", "QSO", "STAR"])
    fibermap = blank_columns(FIBERMAP_COLUMNS, n)
    fibermap["TARGETID"] = z["TARGETID"]
    path = tmp_path / "redrock.fits"
    write_redrock(path, z, fibermap, header={"SPGRP": "healpix"})
    table = read_redrock(path)
    assert table["targetid"].to_pylist() == [5, 6, 7]
    assert table["z"].to_pylist() == [0.1, 0.5, 1.2]
    assert table["zwarn"].to_pylist() == [0, 4, 0]
    assert table["spectype"].to_pylist() == ["GALAXY", "QSO", "STAR"]
    np.testing.assert_array_equal(
        np.stack(table["coeff"].to_numpy(zero_copy_only=False)), z["COEFF"]
    )
    with fitsio.FITS(str(path)) as fits:
        assert [h.get_extname() for h in fits][1:] == [
            "REDSHIFTS",
            "FIBERMAP",
            "EXP_FIBERMAP",
            "TSNR2",
        ]


def zcatalog_columns() -> dict[str, np.ndarray]:
    """Ten rows; each selection cut removes a known set (see the comments)."""
    n = 10
    cols = blank_columns(ZCATALOG_COLUMNS, n)
    cols["TARGETID"] = np.arange(100, 100 + n)
    cols["SURVEY"] = "sv3"
    cols["PROGRAM"] = "dark"
    cols["ZCAT_PRIMARY"] = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 0], bool)  # row 9 fails
    cols["OBJTYPE"] = np.array(["TGT"] * 8 + ["SKY", "TGT"])  # row 8
    cols["COADD_FIBERSTATUS"] = np.array([0] * 7 + [8, 0, 0])  # row 7
    # FITS-style blank padding must not defeat the string cuts
    cols["SPECTYPE"] = np.array(
        [
            "GALAXY",
            "GALAXY",
            "GALAXY",
            "GALAXY",
            "GALAXY",
            "STAR  ",
            "QSO   ",
            "GALAXY",
            "GALAXY",
            "GALAXY",
        ]
    )  # rows 5, 6
    cols["ZWARN"] = np.array([0, 0, 0, 0, 4, 0, 0, 0, 0, 0])  # row 4
    cols["DELTACHI2"] = np.array([100.0, 100, 100, 10, 100, 100, 100, 100, 100, 100])  # row 3
    cols["Z"] = np.array([0.1, 0.5, 1.7, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3])  # row 2 (z >= 1.6)
    return cols


def test_zcatalog_roundtrip_and_selection(tmp_path: Path) -> None:
    path = tmp_path / "zall-pix-fuji.fits"
    cols = zcatalog_columns()
    write_zcatalog(path, cols, header={"SPECPROD": "fuji"})
    everything, report = read_zcatalog(path, selection=None)
    assert everything.num_rows == 10 and report.n_selected == 10 and report.cuts == []
    assert everything.column_names == [c.lower() for c in ZCATALOG_COLUMNS]
    assert everything["spectype"].to_pylist()[5:7] == ["STAR", "QSO"]
    assert everything["survey"].to_pylist() == ["sv3"] * 10
    table, report = read_zcatalog(path, columns=["TARGETID", "z"])
    assert table.column_names == ["targetid", "z"]
    assert table["targetid"].to_pylist() == [100, 101]
    assert report.n_input == 10 and report.n_selected == 2
    assert [removed for _name, removed in report.cuts] == [1, 1, 1, 2, 1, 1, 0, 1]
    assert report.cuts[0][0] == "ZCAT_PRIMARY"


def test_zcatalog_selection_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "zpix.fits"
    write_zcatalog(path, zcatalog_columns())
    loose = GalaxySelection(spectype="QSO", deltachi2_min=None, z_max=None)
    table, report = read_zcatalog(path, columns=["TARGETID"], selection=loose)
    assert table["targetid"].to_pylist() == [106]
    assert report.n_selected == 1 and len(report.cuts) == 6


def test_write_zcatalog_requires_every_column(tmp_path: Path) -> None:
    cols = zcatalog_columns()
    del cols["DELTACHI2"]
    with pytest.raises(ValueError, match="DELTACHI2"):
        write_zcatalog(tmp_path / "z.fits", cols)
    assert not (tmp_path / "z.fits").exists()


@pytest.mark.skipif(importlib.util.find_spec("desispec") is None, reason="desispec not installed")
def test_read_coadd_equals_desispec_coadd_cameras(tmp_path: Path) -> None:
    from desispec.coaddition import coadd_cameras
    from desispec.io import read_spectra

    flux, ivar, mask = random_arms(4, seed=4)
    path = tmp_path / "coadd.fits"
    write_coadd(
        path,
        small_fibermap(4),
        flux,
        ivar,
        mask,
        header={"HPXPIXEL": 1, "SURVEY": "sv3", "PROGRAM": "dark"},
    )
    merged = coadd_cameras(read_spectra(str(path)))
    band = merged.bands[0]
    ours = read_coadd_arrays(path)
    np.testing.assert_allclose(merged.wave[band], WAVELENGTH, atol=1e-6)
    np.testing.assert_allclose(ours.flux, merged.flux[band], rtol=1e-5, atol=0)
    np.testing.assert_allclose(ours.ivar, merged.ivar[band], rtol=1e-5, atol=0)
    np.testing.assert_array_equal(ours.mask != 0, merged.mask[band] != 0)


def test_masks_stored_as_signed_int32_take_the_fitsio_path(tmp_path: Path) -> None:
    """Coadds whose MASK HDUs are int32 without BZERO (not the memory-mapped layout) read the same."""
    path = tmp_path / "int32-mask.fits"
    with fitsio.FITS(str(REAL_COADD)) as fin, fitsio.FITS(str(path), "rw", clobber=True) as fout:
        for i, hdu in enumerate(fin):
            name = hdu.get_extname()
            data = hdu.read() if i else None
            if name.endswith("_MASK"):
                data = data.astype(np.int32)
            if hdu.get_exttype() == "BINARY_TBL":
                fout.write_table(data, extname=name)
            else:
                fout.write(data, extname=name or None)
        assert "BZERO" not in fitsio.read_header(str(path), "B_MASK")
    ref = np.load(REFERENCE)
    arrays = read_coadd_arrays(path, targetids=ref["targetid"][[0, 2, 3]].tolist())
    np.testing.assert_allclose(arrays.flux, ref["flux"][[0, 2, 3]], rtol=1e-5, atol=0)
    np.testing.assert_array_equal(arrays.mask != 0, ref["mask"][[0, 2, 3]] != 0)
