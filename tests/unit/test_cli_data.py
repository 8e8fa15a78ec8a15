"""``rantune data``: summary.json and plot on success; one-line error, exit != 0, no output on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import rantune.channels as channels
from rantune.channels import ChannelDataset
from rantune.simulations.cli import app

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

TINY_PRESET = """
name = "tiny"
test_fraction = 0.2
[radio]
num_bs_antennas = 4
num_subcarriers = 8
num_beams = 4
num_time_steps = 2
[[sites]]
name = "a"
scenario = "umi"
num_samples = {n}
[[sites]]
name = "b"
scenario = "rma"
num_samples = {n}
distance_range_m = [35.0, 900.0]
"""


def run(*args: str):
    return CliRunner().invoke(app, ["data", *args])


def one_line_error(result) -> str:
    """The error text, checked to be a single ``error: ...`` line on stderr."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def no_generation(monkeypatch):
    """Fail the test if anything tries to generate channels."""

    def refuse(*args, **kwargs):
        raise AssertionError("channel generation started on bad input")

    monkeypatch.setattr(channels, "_generate", refuse)


def fake_site(cfg, index: int, advance) -> ChannelDataset:
    """Synthetic stand-in for Sionna with every field the summary reads."""
    site, radio = cfg.sites[index], cfg.radio
    n, shape = site.num_samples, (site.num_samples, radio.num_bs_antennas, radio.num_subcarriers)
    rng = np.random.default_rng(site.seed)
    csi = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    arrays = {
        "csi": csi,
        "csi_noisy": csi,
        "csi_norm": np.ones(n, np.float32),
        "los": rng.integers(0, 2, n).astype(np.int8),
        "indoor": np.zeros(n, np.int8),
        "beam_index": rng.integers(0, radio.num_beams, n),
        "beam_gains": rng.random((n, radio.num_beams)).astype(np.float32),
        "ut_position": rng.random((n, 3)).astype(np.float32),
        "distance_2d": rng.uniform(*site.distance_range_m, n).astype(np.float32),
        "speed": rng.uniform(*site.speed_range_mps, n).astype(np.float32),
        "snr_db": rng.uniform(*site.snr_range_db, n).astype(np.float32),
        "site_index": np.full(n, index, dtype=np.int64),
    }
    return ChannelDataset(arrays)


@pytest.fixture
def fake_generation(monkeypatch):
    """Synthetic channels instead of Sionna, for tests about files and errors."""
    monkeypatch.setattr(channels, "_generate", fake_site)


def test_data_smoke_writes_summary_and_plot(tmp_path, smoke_cfg, smoke_sites):
    # Prepare: smoke_sites put the smoke preset into the session cache
    out = tmp_path / "run" / "data"

    # Execute
    result = run("--preset", "smoke", "--out", str(out))

    # Assert
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "smoke"
    assert summary["config_hash"] == smoke_cfg.config_hash()
    assert summary["seed"] == 0
    assert summary["radio"]["num_bs_antennas"] == smoke_cfg.radio.num_bs_antennas
    assert [s["name"] for s in summary["sites"]] == [s.name for s in smoke_cfg.sites]
    for row, site, data in zip(summary["sites"], smoke_cfg.sites, smoke_sites, strict=True):
        assert row["scenario"] == site.scenario
        assert row["num_samples"] == site.num_samples == len(data)
        assert row["los_fraction"] == pytest.approx(data["los"].mean())
        assert row["mean_distance_m"] == pytest.approx(data["distance_2d"].mean(), rel=1e-5)
        lo, hi = row["speed_range_mps"]
        assert site.speed_range_mps[0] - 1e-4 <= lo <= hi <= site.speed_range_mps[1] + 1e-4
        lo, hi = row["snr_range_db"]
        assert site.snr_range_db[0] <= lo <= hi <= site.snr_range_db[1]
        assert len(row["beam_histogram"]) == smoke_cfg.radio.num_beams
        assert sum(row["beam_histogram"]) == site.num_samples
        assert row["site_hash"] == smoke_cfg.site_hash(site)
    partition = summary["partition"]
    assert partition["scheme"] == "natural" and partition["num_clients"] == 3
    assert (out / "partition_labels.png").read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in out.iterdir()) == ["partition_labels.png", "summary.json"]
    assert "umi-street" in result.stdout and "smoke" in result.stdout


def test_data_seed_and_partition_options_reach_the_summary(tmp_path, fake_generation):
    # Prepare
    preset = tmp_path / "tiny.toml"
    preset.write_text(TINY_PRESET.format(n=40))
    out = tmp_path / "out"

    # Execute
    result = run(
        "--preset", str(preset), "--out", str(out), "--seed", "3",
        "--partition", "dirichlet-0.5", "--label", "los", "--cache", str(tmp_path / "cache"),
    )  # fmt: skip

    # Assert
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 3 and summary["preset"] == "tiny"
    assert summary["partition"]["scheme"] == "dirichlet-0.5"
    assert summary["partition"]["num_clients"] == 2
    assert summary["partition"]["global_test_size"] == 16  # the preset's test_fraction 0.2
    assert list((tmp_path / "cache" / "sites").glob("*.safetensors"))


def bad_preset(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown-preset", "preset 'no-such-preset' not found"),
        ("unknown-scenario", "a.scenario='dense-urban' is invalid: choose one of umi, uma, rma"),
        ("zero-samples", "a.num_samples=0 is invalid"),
        ("no-beams", "num_beams=0 is invalid"),
        ("unknown-key", "unknown key(s) ['antennas']"),
        ("not-toml", "cannot read preset file"),
        ("preset-is-directory", "cannot read preset file"),
        ("bad-partition", "partition scheme 'dirichlet-x' is invalid"),
        ("bad-label", "partition label 'snr' is invalid"),
        ("negative-seed", "seed=-1 is invalid"),
        ("out-is-file", "is a file"),
        ("out-under-file", "is a file"),
    ],
)
def test_bad_input_fails_cleanly_and_writes_nothing(tmp_path, no_generation, case, expected):
    # Prepare
    out = tmp_path / "out"
    site = '[[sites]]\nname = "a"\nscenario = "{}"\nnum_samples = {}\n'
    preset_files = {
        "unknown-scenario": site.format("dense-urban", 5),
        "zero-samples": site.format("umi", 0),
        "no-beams": "[radio]\nnum_beams = 0\n" + site.format("umi", 5),
        "unknown-key": "[radio]\nantennas = 8\n" + site.format("umi", 5),
        "not-toml": "[[sites]\nname=",
    }
    args = {
        "unknown-preset": ["--preset", "no-such-preset"],
        "preset-is-directory": ["--preset", str(tmp_path)],
        "bad-partition": ["--preset", "smoke", "--partition", "dirichlet-x"],
        "bad-label": ["--preset", "smoke", "--label", "snr"],
        "negative-seed": ["--preset", "smoke", "--seed", "-1"],
        "out-is-file": ["--preset", "smoke"],
        "out-under-file": ["--preset", "smoke"],
    }.get(case)
    if case in preset_files:
        args = ["--preset", bad_preset(tmp_path, preset_files[case])]
    if case == "out-is-file":
        out.write_text("keep me")
    if case == "out-under-file":
        (tmp_path / "file").write_text("keep me")
        out = tmp_path / "file" / "out"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    # Execute
    result = run(*args, "--out", str(out), "--cache", str(tmp_path / "cache"))

    # Assert
    assert result.exit_code == 2, result.output
    assert expected in one_line_error(result)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    if case == "out-is-file":
        assert out.read_text() == "keep me"
    if case == "out-under-file":
        assert (tmp_path / "file").read_text() == "keep me"


def test_failure_after_generation_leaves_no_output_directory(tmp_path, fake_generation):
    # Prepare: 2 samples per site cannot be split into train/val/test
    preset = tmp_path / "tiny.toml"
    preset.write_text(TINY_PRESET.format(n=2))
    out = tmp_path / "out"

    # Execute
    result = run("--preset", str(preset), "--out", str(out), "--cache", str(tmp_path / "c"))

    # Assert
    assert result.exit_code == 2
    assert "cannot be split" in one_line_error(result)
    assert not out.exists()


def test_corrupt_cache_is_reported_and_rebuild_repairs_it(tmp_path, fake_generation):
    # Prepare
    preset = tmp_path / "tiny.toml"
    preset.write_text(TINY_PRESET.format(n=40))
    cache = tmp_path / "cache"
    common = ["--preset", str(preset), "--cache", str(cache)]
    assert run(*common, "--out", str(tmp_path / "first")).exit_code == 0
    shard = sorted((cache / "sites").glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])

    # Execute
    broken = run(*common, "--out", str(tmp_path / "second"))
    repaired = run(*common, "--out", str(tmp_path / "third"), "--rebuild")

    # Assert
    assert broken.exit_code == 2
    message = one_line_error(broken)
    assert "corrupted" in message and str(shard) in message and "--rebuild" in message
    assert not (tmp_path / "second").exists()
    assert repaired.exit_code == 0, repaired.output
    first = json.loads((tmp_path / "first" / "summary.json").read_text())
    third = json.loads((tmp_path / "third" / "summary.json").read_text())
    assert first["sites"] == third["sites"]


DATA_ONLY_APP = """
import typer
from rantune.simulations.commands.data import register
app = typer.Typer(pretty_exceptions_enable=False)
register(app)

@app.callback()
def root() -> None:
    pass

app()
"""


def test_real_process_exit_code_and_single_stderr_line(tmp_path):
    # Prepare: the data command alone in a fresh interpreter (the full CLI also
    # imports the other commands' heavy dependencies, which is not what this checks)
    out = tmp_path / "out"
    command = [sys.executable, "-c", DATA_ONLY_APP, "data", "--preset", "nope", "--out", str(out)]

    # Execute
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    # Assert
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: preset 'nope' not found"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stdout == ""
    assert not out.exists()
