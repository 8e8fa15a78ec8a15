"""Per-station data sets: memory-mapped reads, who opens which shard, deployed nodes' data-path.

Proves: a mapped read returns exactly the rows of a full load and verifies only the
tensors it reads; a natural client opens only its own station's shard and the server
only the global test rows (nothing with server-evaluation off); a synthetic-partition
client reads the label tensors of every station and rows only of its own; per-station
rows are the pooled partitioning's; an exported station directory gives a deployed
node the same rows as the simulation; a federation of station directories completes
with an empty channel cache and the numbers of the simulation; bad data-paths fail
with a clear message (InputError, CLI exit 2) and write nothing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict
from typer.testing import CliRunner

from rantune.channels import ChannelDataset, CorruptCacheError, cache_key
from rantune.channels.cache import MappedShard, ShardCache
from rantune.channels.sources import NodeStations, PresetStations, export_station
from rantune.channels.station import MANIFEST_NAME, SHARD_NAME
from rantune.client.jobs import JobRegistry
from rantune.errors import InputError
from rantune.federated import splits
from rantune.federated.evaluation import GlobalEvaluator
from rantune.partition import LABEL_FIELDS, partition
from rantune.simulations.cli import app as cli
from rantune.simulations.engine import node_configs_for, resolve_config, run_simulation
from rantune.simulations.federation import launcher
from rantune.tasks import get_task

BASE = {"data.preset": "smoke", "task": "los", "model.pretrained": "none"}


@pytest.fixture
def opened(monkeypatch):
    """Every MappedShard opened and every read: ``{"shards": [path], "reads": [...]}``."""
    log: dict[str, list] = {"shards": [], "reads": []}
    init, read = MappedShard.__init__, MappedShard.read

    def tracked_init(self, shard, meta, hint):
        log["shards"].append(str(shard))
        init(self, shard, meta, hint)

    def tracked_read(self, index=None, fields=None):
        arrays = read(self, index, fields)
        rows = self.num_samples if index is None else len(index)
        log["reads"].append((str(self.shard), None if fields is None else tuple(fields), rows))
        return arrays

    monkeypatch.setattr(MappedShard, "__init__", tracked_init)
    monkeypatch.setattr(MappedShard, "read", tracked_read)
    return log


def _shard(cfg, index: int) -> str:
    return str(ShardCache().paths(cache_key(cfg, cfg.sites[index]))[0])


def _context(flat: dict, pid: int, **node) -> Context:
    return Context(
        run_id=1,
        node_id=pid,
        node_config={"partition-id": pid, "num-partitions": 3, **node},
        state=RecordDict(),
        run_config=flat,
    )


# ----------------------------------------------------------------- mapped reads
def test_mapped_reads_equal_a_full_load_and_verify_only_what_they_read(smoke_sites, tmp_path):
    # Prepare: station 1 as a cache entry, then a copy with one byte of its csi flipped
    station = smoke_sites[1]
    ShardCache(tmp_path / "good").save("bs-1", station, {})
    shard, meta = ShardCache(tmp_path / "good").paths("bs-1")
    rows = np.array([5, 0, 17, 3])
    damaged = ShardCache(tmp_path / "bad")
    bad_shard, bad_meta = damaged.paths("bs-1")
    bad_shard.parent.mkdir(parents=True)
    payload = bytearray(shard.read_bytes())
    length = int.from_bytes(payload[:8], "little")
    header = json.loads(payload[8 : 8 + length])
    payload[8 + length + header["csi::complex"]["data_offsets"][0] + 10] ^= 0xFF
    bad_shard.write_bytes(bytes(payload))
    bad_meta.write_text(meta.read_text())
    old_style = json.loads(meta.read_text())
    del old_style["tensors"]  # an entry written before per-tensor digests

    # Execute
    picked = ShardCache(tmp_path / "good").open("bs-1").read(rows)
    labels = damaged.open("bs-1").read(None, ["beam_index", "los"])

    # Assert: the rows of a full load, in the order asked; only what is read is checked
    assert set(picked) == set(station.arrays)
    for name, array in picked.items():
        np.testing.assert_array_equal(array, station[name][rows])
    np.testing.assert_array_equal(labels["los"], station["los"])
    with pytest.raises(CorruptCacheError, match=r"corrupted \(csi::complex: sha256"):
        damaged.open("bs-1").read(rows, ["csi"])
    with pytest.raises(CorruptCacheError, match=r"corrupted \(sha256"):
        damaged.open("bs-1").dataset()
    bad_meta.write_text(json.dumps(old_style))
    with pytest.raises(CorruptCacheError, match=r"corrupted \(sha256"):
        damaged.open("bs-1").read(None, ["los"])  # no digests: the whole file is checked


# ------------------------------------------------------- who opens which shard
def test_a_natural_client_opens_only_its_own_stations_shard(smoke_cfg, smoke_sites, opened):
    # Prepare
    flat = resolve_config(BASE).flat_dict()

    # Execute
    job = JobRegistry().job(_context(flat, 1))

    # Assert
    assert set(opened["shards"]) == {_shard(smoke_cfg, 1)}
    pooled = ChannelDataset.concat(list(smoke_sites))
    data = splits.FederatedData.load(resolve_config(BASE).data, resolve_config(BASE).partition)
    x, _ = get_task("los").tensors(pooled, data.rows(1, "train"))
    torch.testing.assert_close(job.train_xy[0], x)


def test_the_server_reads_only_global_test_rows_and_nothing_when_evaluation_is_off(
    smoke_sites, opened
):
    # Prepare
    off = resolve_config({**BASE, "server-evaluation": False})
    capped = resolve_config({**BASE, "data.max-global-test-rows": 5})

    # Execute
    silent = GlobalEvaluator(off)
    nothing = list(opened["shards"])
    evaluator = GlobalEvaluator(capped)

    # Assert
    assert nothing == [] and silent.x is None and silent({}) == {}
    assert len(evaluator.x) == 5
    assert sum(n for _, fields, n in opened["reads"]) == 5  # 5 rows read, from all stations


def test_a_synthetic_client_reads_every_stations_labels_and_only_its_own_rows(smoke_sites, opened):
    # Prepare
    cfg = resolve_config({**BASE, "partition.scheme": "iid", "partition.num-clients": 4})
    data = splits.FederatedData.load(cfg.data, cfg.partition)
    own = sum(len(data.rows(2, s)) for s in splits.SPLITS)
    opened["reads"].clear()

    # Execute
    JobRegistry().job(_context({**cfg.flat_dict()}, 2, **{"num-partitions": 4}))

    # Assert: label tensors of all 3 stations, then only the client's rows of any field
    label_reads = [r for r in opened["reads"] if r[1] is not None]
    row_reads = [r for r in opened["reads"] if r[1] is None]
    assert len({shard for shard, *_ in label_reads}) == len(label_reads) == 3
    assert all(set(r[1]) == set(LABEL_FIELDS.values()) for r in label_reads)
    assert sum(n for *_, n in row_reads) == own


@pytest.mark.parametrize("scheme", ["natural", "dirichlet-0.5"])
def test_per_station_rows_are_the_pooled_partitionings(smoke_sites, scheme):
    # Prepare
    cfg = resolve_config({**BASE, "partition.scheme": scheme, "partition.num-clients": 3})
    pooled = ChannelDataset.concat(list(smoke_sites))
    labels = {k: pooled[f].astype(np.int64) for k, f in LABEL_FIELDS.items()}
    want = partition(pooled["site_index"], labels, splits.partition_config(cfg.data, cfg.partition))

    # Execute
    data = splits.FederatedData.load(cfg.data, cfg.partition)

    # Assert
    np.testing.assert_array_equal(data.rows(None, "test"), want.global_test)
    for c, client in enumerate(want.clients):
        for split in splits.SPLITS:
            np.testing.assert_array_equal(data.rows(c, split), getattr(client, split))


# ------------------------------------------------------------ deployed stations
def test_an_exported_station_gives_a_node_the_simulations_rows(smoke_cfg, smoke_sites, tmp_path):
    # Prepare
    cfg = resolve_config(BASE)
    task = get_task("los")

    # Execute
    out = export_station(smoke_cfg, 1, tmp_path / "bs-1")
    node = splits.FederatedData.of_node(cfg.data, cfg.partition, 1, out)
    simulated = splits.FederatedData.load(cfg.data, cfg.partition)

    # Assert
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, SHARD_NAME]
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["name"] == "uma-vehicular" and manifest["num_samples"] == len(smoke_sites[1])
    assert manifest["provenance"]["site_hash"] == smoke_cfg.site_hash(smoke_cfg.sites[1])
    assert manifest["provenance"]["generator"] == "TR 38.901" and manifest["tensors"]
    for split in splits.SPLITS:
        for a, b in zip(
            node.tensors(task, 1, split), simulated.tensors(task, 1, split), strict=True
        ):
            torch.testing.assert_close(a, b)
    with pytest.raises(InputError, match="holds only its own data"):
        node.tensors(task, None, "test")  # the global test set is not on a base station


@pytest.fixture(scope="module")
def station_dirs(tmp_path_factory, smoke_cfg, smoke_sites):
    root = tmp_path_factory.mktemp("stations")
    return [export_station(smoke_cfg, i, root / f"bs-{i}") for i in range(3)]


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing", "does not exist or is not a directory"),
        ("empty", "holds no station.json"),
        (
            "other",
            "holds station 'umi-street', but this node is partition-id 1 = station 'uma-vehicular'",
        ),
        ("seed", "generated from another configuration"),
        ("iid", "needs partition.scheme='natural'"),
    ],
)
def test_bad_data_paths_fail_clearly_before_the_run_writes_anything(
    station_dirs, tmp_path, case, match
):
    # Prepare
    path = {"missing": tmp_path / "nope", "empty": tmp_path, "other": station_dirs[0]}.get(
        case, station_dirs[1]
    )
    overrides = {**BASE, "out-dir": str(tmp_path / "run")}
    if case == "seed":
        overrides["data.seed"] = 1
    if case == "iid":
        overrides.update({"partition.scheme": "iid", "partition.num-clients": 3})
    cfg = resolve_config(overrides)
    nodes = [
        {**n, "data-path": str(path)} if n["partition-id"] == 1 else n
        for n in node_configs_for(cfg)
    ]

    # Execute / Assert
    with pytest.raises(InputError, match=match):
        run_simulation(cfg, node_configs=nodes)
    assert not (tmp_path / "run").exists()


def test_a_node_reaches_no_other_station(smoke_cfg, station_dirs):
    # Prepare
    node = NodeStations(smoke_cfg, 2, station_dirs[2])

    # Execute / Assert
    assert node[2].num_samples == 96
    with pytest.raises(InputError, match="station 0 is not here"):
        node[0]


@pytest.mark.slow
def test_a_federation_of_station_directories_completes_with_an_empty_cache(station_dirs, tmp_path):
    # Prepare: the server opens no data; the nodes have only their own station directory
    empty = tmp_path / "empty-cache"
    overrides = {**BASE, "server-evaluation": False, "num-server-rounds": 2}
    deployed = resolve_config(
        {**overrides, "data.cache": str(empty), "out-dir": str(tmp_path / "d")}
    )
    simulated = resolve_config({**overrides, "out-dir": str(tmp_path / "s")})
    nodes = [
        {**n, "data-path": str(station_dirs[n["partition-id"]])} for n in node_configs_for(deployed)
    ]

    # Execute
    history = run_simulation(deployed, node_configs=nodes)
    reference = run_simulation(simulated)

    # Assert
    assert not empty.exists()  # nothing generated or read from a channel cache
    for got, want in zip(history["rounds"][1:], reference["rounds"][1:], strict=True):
        assert got["server"] == {} and got["train"]["answered"] == ["0", "1", "2"]
        assert {c: e["train"] for c, e in got["clients"].items()} == {
            c: e["train"] for c, e in want["clients"].items()
        }


def test_federation_up_lays_out_one_station_per_node_or_refuses_clearly(smoke_sites, tmp_path):
    # Prepare
    cfg = launcher.LaunchConfig(out_dir=tmp_path / "fed", num_nodes=3, preset="smoke")

    # Execute
    configs = launcher._validate(cfg)
    dirs = launcher._lay_out_station_data(cfg, tmp_path / "fed")

    # Assert
    assert [d.name for d in dirs] == ["bs-0", "bs-1", "bs-2"]
    for i, (text, directory) in enumerate(zip(configs, dirs, strict=True)):
        assert f'data-path="{directory}"' in text
        assert sorted(p.name for p in directory.iterdir()) == [MANIFEST_NAME, SHARD_NAME]
        assert (
            PresetStations(launcher._station_preset(cfg)).num_samples(i)
            == json.loads((directory / MANIFEST_NAME).read_text())["num_samples"]
        )
    with pytest.raises(InputError, match="--nodes 2 but preset 'smoke' has 3 base stations"):
        launcher._validate(
            launcher.LaunchConfig(out_dir=tmp_path / "x", num_nodes=2, preset="smoke")
        )


def test_cli_up_with_a_bad_data_path_exits_2_and_writes_nothing(station_dirs, tmp_path):
    # Prepare: node 1 is given station 0's directory
    out = tmp_path / "fed"
    configs = [
        f'partition-id={i} num-partitions=3 data-path="{station_dirs[0 if i == 1 else i]}"'
        for i in range(3)
    ]
    args = ["federation", "up", "--nodes", "3", "--preset", "smoke", "--out", str(out)]
    for text in configs:
        args += ["--node-config", text]

    # Execute
    result = CliRunner().invoke(cli, args)
    missing = CliRunner().invoke(
        cli,
        [
            "federation",
            "up",
            "--nodes",
            "1",
            "--out",
            str(out),
            "--node-config",
            'partition-id=0 num-partitions=1 data-path="/nope"',
        ],
    )

    # Assert
    assert result.exit_code == 2 and "holds station 'umi-street'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert missing.exit_code == 2 and "/nope" in missing.output
    assert not out.exists()
