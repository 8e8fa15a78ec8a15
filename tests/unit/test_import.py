"""``rantune data import`` and ``scenario = "import"`` sites: a user's file becomes a station.

Round trips from .npz, HDF5, MATLAB v5 and v7.3 files; derived fields (normalisation,
beam labels, LS-noisy estimates); unknown fields; every bad input gives an InputError,
a one-line CLI error with exit status 2 and nothing written; imported stations in a
preset next to each other feed ``rantune data`` and a federated ``rantune simulate``.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from typer.testing import CliRunner

from rantune.channels import load_sites
from rantune.channels.beams import beam_gains, dft_codebook
from rantune.channels.cache import CorruptCacheError
from rantune.channels.importer import import_site
from rantune.channels.station import load_station, write_station
from rantune.config import ImportSiteConfig, RadioConfig
from rantune.errors import InputError
from rantune.partition import PartitionConfig, partition
from rantune.presets import load_preset
from rantune.simulations.cli import app
from rantune.tasks import get_task

N, A, S = 24, 4, 8


def channels(n: int = N, antennas: int = A, subcarriers: int = S, seed: int = 0) -> np.ndarray:
    """``[n, antennas, subcarriers]`` complex128 random channels with varied norms."""
    rng = np.random.default_rng(seed)
    shape = (n, antennas, subcarriers)
    raw = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return raw * rng.uniform(0.1, 10.0, (n, 1, 1))


def extras(n: int = N, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "pos": rng.uniform(-100.0, 100.0, (n, 3)),
        "los": rng.integers(0, 2, n),
        "snr": rng.uniform(0.0, 20.0, n),
    }


def write_mat73(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte MAT header, arrays
    column-major (dimensions reversed), complex as (real, imag) compounds, vectors [N, 1]."""
    with h5py.File(path, "w", userblock_size=512) as handle:
        for key, value in arrays.items():
            value = np.asarray(value)
            value = value.reshape(-1, 1) if value.ndim == 1 else value
            stored = np.ascontiguousarray(value.T)
            if np.iscomplexobj(stored):
                record = np.empty(stored.shape, np.dtype([("real", "<f8"), ("imag", "<f8")]))
                record["real"], record["imag"] = stored.real, stored.imag
                stored = record
            else:
                stored = stored.astype(np.float64)
            handle.create_dataset(key, data=stored).attrs["MATLAB_class"] = np.bytes_("double")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5"
    with open(path, "r+b") as handle:
        handle.write(header.ljust(116, b" ") + bytes(8) + b"\x00\x02" + b"IM")


def site_for(path: Path, **options) -> ImportSiteConfig:
    return ImportSiteConfig(name="st", path=str(path), **options)


FULL = {"positions_key": "pos", "los_key": "los", "snr_key": "snr", "bs_position_m": (1, 2, 10)}


@pytest.fixture
def npz_file(tmp_path) -> Path:
    path = tmp_path / "meas.npz"
    np.savez(path, csi=channels(), **extras())
    return path


def test_npz_round_trip_through_a_station_directory(npz_file, tmp_path):
    # Prepare
    raw, more = channels(), extras()
    norm = np.linalg.norm(raw.reshape(N, -1), axis=1)

    # Execute
    data, manifest = import_site(site_for(npz_file, **FULL), num_beams=4)
    write_station(tmp_path / "station", data, manifest)
    loaded, stored = load_station(tmp_path / "station")

    # Assert
    assert sorted(p.name for p in (tmp_path / "station").iterdir()) == [
        "station.json",
        "station.safetensors",
    ]
    np.testing.assert_allclose(loaded["csi"], raw / norm[:, None, None], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(loaded["csi_norm"], norm, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(loaded["csi"].reshape(N, -1), axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(loaded["los"], more["los"])
    np.testing.assert_allclose(loaded["snr_db"], more["snr"], rtol=1e-6)
    np.testing.assert_allclose(loaded["ut_position"], more["pos"] - [1, 2, 10], rtol=1e-5)
    expected_distance = np.hypot(more["pos"][:, 0] - 1, more["pos"][:, 1] - 2)
    np.testing.assert_allclose(loaded["distance_2d"], expected_distance, rtol=1e-5)
    assert stored["unknown_fields"] == ["indoor", "speed"]
    assert stored["fields"]["los"]["source"] == "file:los"
    assert stored["fields"]["beam_gains"] == {
        "shape": [N, 4],
        "dtype": "float32",
        "source": "derived",
    }
    assert stored["provenance"]["source_format"] == "npz"
    assert stored["provenance"]["options"]["los_key"] == "los"
    assert len(stored["provenance"]["source_sha256"]) == 64
    assert stored["radio"]["num_bs_antennas"] == A and stored["radio"]["num_subcarriers"] == S
    assert stored["radio"]["carrier_frequency_hz"] is None  # not in the file: unknown


def test_hdf5_and_matlab_files_give_the_same_station(npz_file, tmp_path):
    # Prepare
    raw, more = channels(), extras()
    h5 = tmp_path / "meas.h5"
    with h5py.File(h5, "w") as handle:
        handle.create_dataset("group/H", data=raw.astype(np.complex64))
        for key, value in more.items():
            handle.create_dataset(key, data=value)
    mat5 = tmp_path / "meas5.mat"
    scipy.io.savemat(mat5, {"H": raw, **more})  # vectors become [1, N] rows
    mat73 = tmp_path / "meas73.mat"
    write_mat73(mat73, {"H": raw, **more})
    assert scipy.io.matlab.matfile_version(str(mat73)) == (2, 0)  # a genuine v7.3 header

    # Execute
    reference, _ = import_site(site_for(npz_file, **FULL))
    results = {
        "hdf5": import_site(site_for(h5, **FULL, csi_key="group/H")),
        "mat": import_site(site_for(mat5, **FULL, csi_key="H")),
        "mat-v7.3": import_site(site_for(mat73, **FULL, csi_key="H")),
    }

    # Assert
    for kind, (data, manifest) in results.items():
        assert manifest["provenance"]["source_format"] == kind
        for field in ("csi", "csi_norm", "csi_noisy", "los", "snr_db", "ut_position"):
            np.testing.assert_allclose(
                data[field], reference[field], rtol=1e-4, atol=1e-6, err_msg=f"{kind} {field}"
            )


def test_real_array_with_trailing_real_imag_axis_equals_complex(tmp_path):
    # Prepare
    raw = channels()
    np.savez(tmp_path / "c.npz", csi=raw)
    np.savez(tmp_path / "r.npz", csi=np.stack([raw.real, raw.imag], axis=-1).astype(np.float32))

    # Execute
    complex_data, _ = import_site(site_for(tmp_path / "c.npz"))
    real_data, _ = import_site(site_for(tmp_path / "r.npz"))

    # Assert
    np.testing.assert_allclose(real_data["csi"], complex_data["csi"], rtol=1e-5, atol=1e-7)


def test_sequence_input_keeps_slots_and_csi_is_the_first_slot(tmp_path):
    # Prepare
    sequence = channels(n=N * 3).reshape(N, 3, A, S)
    np.savez(tmp_path / "seq.npz", csi=sequence)

    # Execute
    data, manifest = import_site(site_for(tmp_path / "seq.npz"))

    # Assert
    norm = np.linalg.norm(sequence[:, 0].reshape(N, -1), axis=1)
    assert data["csi_sequence"].shape == (N, 3, A, S)
    np.testing.assert_allclose(data["csi_sequence"][:, 0], data["csi"])
    np.testing.assert_allclose(
        data["csi_sequence"], sequence / norm[:, None, None, None], rtol=1e-5, atol=1e-7
    )
    assert manifest["radio"]["num_time_steps"] == 3


def test_beam_labels_are_the_argmax_of_noiseless_codebook_gains(tmp_path):
    # Prepare: plane waves along beam k's direction, k = 0..7, plus random channels
    beams, spacing = 8, 0.5
    directions = -1.0 + (2.0 * np.arange(beams) + 1.0) / beams
    steering = np.exp(2j * np.pi * spacing * np.outer(directions, np.arange(A)))  # [K, A]
    planes = np.repeat(steering[:, :, None], S, axis=2) * 3.0  # [K, A, S]
    np.savez(tmp_path / "m.npz", csi=np.concatenate([planes, channels()]))

    # Execute
    data, manifest = import_site(site_for(tmp_path / "m.npz"), num_beams=beams)

    # Assert
    np.testing.assert_array_equal(data["beam_index"][:beams], np.arange(beams))
    codebook = dft_codebook(A, beams, spacing)
    np.testing.assert_allclose(data["beam_gains"], beam_gains(data["csi"], codebook), rtol=1e-5)
    np.testing.assert_array_equal(data["beam_index"], data["beam_gains"].argmax(axis=1))
    assert manifest["codebook"]["num_beams"] == beams


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_noisy_estimate_nmse_is_one_over_snr(tmp_path, snr_db):
    # Prepare
    n = 400
    np.savez(tmp_path / "m.npz", csi=channels(n=n), snr=np.full(n, snr_db))

    # Execute
    data, _ = import_site(site_for(tmp_path / "m.npz", snr_key="snr"))

    # Assert
    error = np.abs(data["csi_noisy"] - data["csi"]) ** 2
    nmse = error.reshape(n, -1).sum(axis=1)  # csi has unit norm
    assert nmse.mean() == pytest.approx(10 ** (-snr_db / 10), rel=0.05)


def test_drawn_snrs_and_noise_are_seeded(npz_file):
    # Execute
    first, _ = import_site(site_for(npz_file, snr_range_db=(3.0, 7.0), seed=5))
    again, _ = import_site(site_for(npz_file, snr_range_db=(3.0, 7.0), seed=5))
    other, _ = import_site(site_for(npz_file, snr_range_db=(3.0, 7.0), seed=6))

    # Assert
    assert ((first["snr_db"] >= 3.0) & (first["snr_db"] <= 7.0)).all()
    assert len(np.unique(first["snr_db"])) == N
    np.testing.assert_array_equal(first["csi_noisy"], again["csi_noisy"])
    assert not np.allclose(first["csi_noisy"], other["csi_noisy"])


def test_missing_fields_are_unknown_and_tasks_needing_them_fail(tmp_path):
    # Prepare
    np.savez(tmp_path / "m.npz", csi=channels())

    # Execute
    data, manifest = import_site(site_for(tmp_path / "m.npz"))

    # Assert
    unknown = ["distance_2d", "indoor", "los", "speed", "ut_position"]
    assert manifest["unknown_fields"] == unknown
    assert (data["los"] == -1).all() and np.isnan(data["distance_2d"]).all()
    rows = np.arange(N)
    with pytest.raises(InputError, match="the los task needs 'los' but it is unknown"):
        get_task("los").tensors(data, rows)
    x, y = get_task("beam").tensors(data, rows)  # beam labels are derived: works
    assert x.shape == (N, 2, A, S) and y.shape == (N, 16)
    labels = {"beam": data["beam_index"], "los": data["los"].astype(np.int64)}
    cfg = PartitionConfig(scheme="dirichlet-0.5", label="los", num_clients=2)
    with pytest.raises(InputError, match="needs that label for every row"):
        partition(data["site_index"], labels, cfg)


def _bad_file(tmp_path: Path, case: str) -> tuple[Path, dict, str]:
    """A bad input file, the import options and the expected error text."""
    path, raw, opts = tmp_path / "bad.npz", channels(), {}
    arrays: dict = {"csi": raw}
    expect = {
        "rank": "expected [N, antennas, subcarriers]",
        "real-without-2": "trailing (real, imag) axis of size 2",
        "string-dtype": "not numbers",
        "nan": "NaN/Inf value(s) (first in sample 3)",
        "inf-positions": "NaN/Inf",
        "lengths": "disagree on the number of samples",
        "empty": "is empty",
        "unknown-key": "no array named 'H'",
        "los-values": "only 0 (NLoS) and 1 (LoS)",
        "positions-shape": "expected [N, 2] or [N, 3]",
        "positions-no-bs": "need the BS position",
        "zero-sample": "all zero",
        "one-slot": "T = 1 slot",
        "unreadable": "cannot read",
        "suffix": "unsupported file type",
        "missing": "does not exist",
    }[case]
    if case == "rank":
        arrays["csi"] = raw[:, 0]
    elif case == "real-without-2":
        arrays["csi"] = raw.real
    elif case == "string-dtype":
        arrays["csi"] = np.array(["a", "b"])
    elif case == "nan":
        arrays["csi"][3, 1, 2] = np.nan
    elif case == "inf-positions":
        arrays["pos"] = np.full((N, 3), np.inf)
        opts = {"positions_key": "pos", "bs_position_m": (0, 0)}
    elif case == "lengths":
        arrays["los"] = np.ones(N - 1)
        opts = {"los_key": "los"}
    elif case == "empty":
        arrays["csi"] = raw[:0]
    elif case == "unknown-key":
        opts = {"csi_key": "H"}
    elif case == "los-values":
        arrays["los"] = np.full(N, 2)
        opts = {"los_key": "los"}
    elif case == "positions-shape":
        arrays["pos"] = np.zeros((N, 4))
        opts = {"positions_key": "pos", "bs_position_m": (0, 0)}
    elif case == "positions-no-bs":
        arrays["pos"] = np.zeros((N, 3))
        opts = {"positions_key": "pos"}
    elif case == "zero-sample":
        arrays["csi"][5] = 0
    elif case == "one-slot":
        arrays["csi"] = raw[:, None]
    if case == "unreadable":
        path.write_bytes(b"this is not a zip archive")
    elif case == "suffix":
        path = tmp_path / "bad.csv"
        path.write_text("1,2\n")
    elif case != "missing":
        np.savez(path, **arrays)
    return path, opts, expect


BAD_CASES = [
    "rank",
    "real-without-2",
    "string-dtype",
    "nan",
    "inf-positions",
    "lengths",
    "empty",
    "unknown-key",
    "los-values",
    "positions-shape",
    "positions-no-bs",
    "zero-sample",
    "one-slot",
    "unreadable",
    "suffix",
    "missing",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_raises_input_error(tmp_path, case):
    # Prepare
    path, opts, expect = _bad_file(tmp_path, case)

    # Execute / Assert
    with pytest.raises(InputError, match=None) as info:
        import_site(site_for(path, **opts))
    assert expect in str(info.value)


def test_unknown_key_lists_the_keys_the_file_holds(npz_file):
    with pytest.raises(InputError, match=r"the file holds: csi, los, pos, snr"):
        import_site(site_for(npz_file, csi_key="H"))


def _cli_flags(opts: dict) -> list[str]:
    flags = []
    for key, value in opts.items():
        flag = "--" + key.removesuffix("_m").replace("_", "-")
        flags += [flag, ",".join(str(v) for v in value) if isinstance(value, tuple) else value]
    return flags


def one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("case", ["rank", "real-without-2", "nan", "lengths", "unknown-key"])
def test_cli_bad_input_one_line_exit_2_nothing_written(tmp_path, case):
    # Prepare
    path, opts, expect = _bad_file(tmp_path, case)
    out = tmp_path / "new" / "station"
    before = sorted(tmp_path.rglob("*"))

    # Execute
    result = CliRunner().invoke(
        app, ["data", "import", str(path), "--out", str(out), *_cli_flags(opts)]
    )

    # Assert
    assert result.exit_code == 2
    assert expect.split("(")[0].strip() in one_line_error(result)
    assert sorted(tmp_path.rglob("*")) == before  # no station, no temp directory


def test_cli_imports_and_refuses_to_overwrite_without_force(npz_file, tmp_path):
    # Prepare
    out = tmp_path / "stations" / "downtown"
    args = ["data", "import", str(npz_file), "--out", str(out), "--los-key", "los"]

    # Execute
    first = CliRunner().invoke(app, [*args, "--num-beams", "8", "--snr-range-db", "5,15"])
    again = CliRunner().invoke(app, args)
    forced = CliRunner().invoke(app, [*args, "--force", "--name", "renamed"])

    # Assert
    assert first.exit_code == 0, first.output
    assert "wrote" in first.output
    assert again.exit_code == 2 and "pass --force" in one_line_error(again)
    assert forced.exit_code == 0, forced.output
    manifest = json.loads((out / "station.json").read_text())
    assert manifest["name"] == "renamed" and manifest["radio"]["num_beams"] == 16
    assert sorted(p.name for p in out.parent.iterdir()) == ["downtown"]  # no temp left


def test_cli_checks_the_file_against_a_preset_radio_block(npz_file, tmp_path):
    # Execute: smoke is 16 antennas x 32 subcarriers, the file 4 x 8
    out = tmp_path / "station"
    result = CliRunner().invoke(
        app, ["data", "import", str(npz_file), "--out", str(out), "--preset", "smoke"]
    )

    # Assert
    assert result.exit_code == 2
    assert "does not match the preset's [radio] block" in one_line_error(result)
    assert not out.exists()


def test_failed_write_leaves_nothing(npz_file, tmp_path, monkeypatch):
    # Prepare: the shard write fails half-way (a full disk, say)
    from rantune.channels import station

    def fail_after_shard(self, key, data, info):
        (self.root / station.SHARD_NAME).write_bytes(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(station.StationStore, "save", fail_after_shard)
    data, manifest = import_site(site_for(npz_file))

    # Execute / Assert
    with pytest.raises(OSError, match="No space"):
        write_station(tmp_path / "out" / "station", data, manifest)
    assert list((tmp_path / "out").iterdir()) == []


def test_corrupt_station_shard_is_never_used(npz_file, tmp_path):
    # Prepare
    data, manifest = import_site(site_for(npz_file))
    out = write_station(tmp_path / "station", data, manifest)
    shard = out / "station.safetensors"
    shard.write_bytes(shard.read_bytes()[:-8] + bytes(8))

    # Execute / Assert
    with pytest.raises(CorruptCacheError, match="re-import the station"):
        load_station(out)


IMPORT_PRESET = """
name = "imported"
test_fraction = 0.2
[radio]
num_bs_antennas = 16
num_subcarriers = 32
num_beams = 16
[[sites]]
name = "measured-dir"
scenario = "import"
path = "stations/north"
[[sites]]
name = "measured-file"
scenario = "import"
path = "south.mat"
csi_key = "H"
los_key = "los"
snr_range_db = [5.0, 15.0]
seed = 3
"""


@pytest.fixture
def import_preset(tmp_path) -> Path:
    """A preset with two imported stations: a station directory and a raw .mat file."""
    n = 40
    north = tmp_path / "north.npz"
    np.savez(north, csi=channels(n, 16, 32, seed=1), los=np.arange(n) % 2)
    data, manifest = import_site(
        site_for(north, los_key="los"), RadioConfig(num_bs_antennas=16, num_subcarriers=32)
    )
    write_station(tmp_path / "stations" / "north", data, manifest)
    scipy.io.savemat(
        tmp_path / "south.mat", {"H": channels(n, 16, 32, seed=2), "los": np.arange(n) % 3 == 0}
    )
    preset = tmp_path / "imported.toml"
    preset.write_text(IMPORT_PRESET)
    return preset


def test_preset_lists_imported_stations(import_preset, tmp_path):
    # Execute
    cfg = load_preset(import_preset)
    sites = load_sites(cfg, cache_root=tmp_path / "cache", progress=False)

    # Assert
    assert [len(s) for s in sites] == [40, 40]
    assert [int(s["site_index"][0]) for s in sites] == [0, 1]
    np.testing.assert_array_equal(sites[1]["los"], (np.arange(40) % 3 == 0).astype(np.int8))
    assert 5.0 <= sites[1]["snr_db"].min() and sites[1]["snr_db"].max() <= 15.0
    assert not (tmp_path / "cache").exists()  # imported stations are never cached


def test_preset_radio_mismatch_fails_before_anything_is_written(import_preset, tmp_path):
    # Prepare: the preset now asks for 8 antennas
    import_preset.write_text(IMPORT_PRESET.replace("num_bs_antennas = 16", "num_bs_antennas = 8"))
    out = tmp_path / "summary"

    # Execute
    result = CliRunner().invoke(app, ["data", "--preset", str(import_preset), "--out", str(out)])

    # Assert
    assert result.exit_code == 2
    assert "num_bs_antennas 16 (preset: 8)" in one_line_error(result)
    assert not out.exists()


def test_rantune_data_summarizes_imported_stations(import_preset, tmp_path):
    # Execute
    out = tmp_path / "summary"
    result = CliRunner().invoke(app, ["data", "--preset", str(import_preset), "--out", str(out)])

    # Assert
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "summary.json").read_text())["sites"]
    assert [r["scenario"] for r in rows] == ["import", "import"]
    assert rows[0]["los_fraction"] == pytest.approx(0.5)
    assert rows[0]["indoor_fraction"] is None and rows[0]["speed_range_mps"] == [None, None]


def simulate_one_round(preset: Path, out: Path):
    """``rantune simulate``: 1 round of the los task, untrained encoder, rank-2 LoRA."""
    flags = ["--preset", str(preset), "--task", "los", "--rounds", "1", "--out", str(out)]
    overrides = ["--run-config", 'model.pretrained="none" lora.r=2']
    return CliRunner().invoke(app, ["simulate", *flags, *overrides])


def test_federated_run_on_two_imported_stations(import_preset, tmp_path):
    # Execute
    out = tmp_path / "run"
    result = simulate_one_round(import_preset, out)

    # Assert
    assert result.exit_code == 0, result.output
    history = json.loads((out / "history.json").read_text())
    assert history["num-clients"] == 2 and history["rounds"][-1]["round"] == 1


def test_los_run_on_a_station_without_los_flags_fails_clearly(import_preset, tmp_path):
    # Prepare: the .mat station is imported without its LoS flags
    import_preset.write_text(IMPORT_PRESET.replace('los_key = "los"\n', ""))

    # Execute
    result = simulate_one_round(import_preset, tmp_path / "run")

    # Assert
    assert result.exit_code == 2
    assert "the los task needs 'los' but it is unknown" in one_line_error(result)
    assert "site index [1]" in result.stderr
