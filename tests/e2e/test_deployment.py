"""The real rantune app on Flower's deployment engine: SuperLink + 2 SuperNodes on
127.0.0.1 with TLS and SuperNode authentication, 2 rounds through ``flwr run``; each
SuperNode is one base station of a 2-station preset (the smoke preset's first two
sites) and holds only its own station data set (``rantune federation up`` lays out
``data/bs-i`` and passes it as ``data-path``; the node's channel cache is private and
empty). The run completes and no node's cache is ever filled: no node read another
station's data.

``flwr run --stream`` exits 0 even when the ServerApp fails, so the test checks the
run's output files. Every process is stopped afterwards, also on failure (the
fixture's ``finally``), and nothing using the federation's ports may be left.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from federation_checks import (
    federation_ports,
    pretrained_or_none,
    wait_no_strays,
)
from safetensors.numpy import load_file

from rantune.simulations.federation import launcher
from rantune.simulations.federation.runner import start_run

pytestmark = pytest.mark.e2e

TIMEOUT_S = 120.0  # Flower start-up on 2 busy cores
SITES = ("umi-street", "uma-vehicular")  # the smoke preset's first two sites
RUN_TIMEOUT_S = 900.0  # every message starts a ClientApp process that imports torch


def assert_nothing_left(ports: list[int], timeout_s: float = 20.0) -> None:
    left = wait_no_strays(ports, timeout_s)
    assert not left, f"stray processes: {left}"


TWO_STATIONS = """
name = "two-stations"
[radio]
num_bs_antennas = 16
num_subcarriers = 32
num_beams = 16
num_time_steps = 6
"""


@pytest.fixture(scope="module")
def two_stations(tmp_path_factory) -> Path:
    """The smoke preset's first two sites (same configs: the smoke cache serves them)."""
    smoke = (Path(__file__).resolve().parents[2] / "rantune/presets/smoke.toml").read_text()
    sites = smoke.split("[[sites]]")[1:3]
    path = tmp_path_factory.mktemp("preset") / "two-stations.toml"
    path.write_text(TWO_STATIONS + "".join("[[sites]]" + site for site in sites))
    return path


def secure_federation(root: Path, name: str, preset: Path) -> launcher.LaunchConfig:
    """2 SuperNodes (stations 0, 1 of ``preset``), TLS + node auth, own FLWR_HOME."""
    return launcher.LaunchConfig(
        out_dir=root / "federation",
        num_nodes=2,
        use_tls=True,
        use_auth=True,
        preset=str(preset),
        name=name,
        flwr_home=root / "flwr-home",
        timeout_s=TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def federation(tmp_path_factory, smoke_sites, two_stations) -> Iterator[launcher.Federation]:
    # smoke_sites: the channel cache exists before `up` exports each node's station
    # from it (and before the ServerApp, which reads the global test rows, needs it)
    root = tmp_path_factory.mktemp("deployment")
    fed = launcher.up(secure_federation(root, "rantune-e2e", two_stations))  # cleans up on error
    try:
        yield fed
    finally:
        launcher.down(fed.out_dir)
        assert_nothing_left(federation_ports(fed))


def test_real_app_runs_two_rounds_over_tls_and_node_auth(federation, two_stations, tmp_path):
    # Prepare: 2 clients = 2 SuperNodes = 2 base stations (natural split)
    out = tmp_path / "run"
    config = {
        "num-server-rounds": 2,
        "data.preset": str(two_stations),
        "model.pretrained": pretrained_or_none(),
        "local-epochs": 1,
        "out-dir": str(out),
    }

    # Execute
    with start_run(federation, config) as run:
        run.wait(RUN_TIMEOUT_S)

    # Assert: the outputs a simulation writes, from both base stations, every round
    logs = run.output[-4000:]
    for name in ("config.json", "history.json", "global_adapter.safetensors"):
        assert (out / name).exists(), f"{name} missing; flwr run output:\n{logs}"
    for r in (0, 1, 2):
        assert (out / "checkpoints" / f"round_{r:03d}.json").exists()
    history = json.loads((out / "history.json").read_text())
    assert [r["round"] for r in history["rounds"]] == [0, 1, 2]
    for rnd in history["rounds"][1:]:
        assert rnd["train"]["answered"] == ["0", "1"] and rnd["train"]["failed"] == []
        assert rnd["train"]["aggregated"] is True
        assert rnd["evaluate"]["answered"] == ["0", "1"]
        assert rnd["bytes"]["up-ratio"] < 0.1  # adapters only travel
    assert history["final"] == history["rounds"][-1]["server"]
    assert 0.0 <= history["final"]["accuracy"] <= 1.0
    config_json = json.loads((out / "config.json").read_text())
    assert config_json["partition"]["scheme"] == "natural"
    # each node held only its own station, and never read or generated another
    for i, node in enumerate(federation.nodes):
        data = Path(node["data_path"])
        assert sorted(p.name for p in data.iterdir()) == ["station.json", "station.safetensors"]
        assert json.loads((data / "station.json").read_text())["name"] == SITES[i]
        assert not Path(node["cache"]).exists(), f"{node['name']} used a channel cache"
    adapter = load_file(str(out / "global_adapter.safetensors"))
    assert adapter and all(".lora_" in k or ".head." in k for k in adapter)
    # the SuperLink really was TLS + auth, and both nodes stayed registered
    argv = federation.processes[0].argv
    assert "--enable-supernode-auth" in argv and "--ssl-certfile" in argv
