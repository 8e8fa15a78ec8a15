"""Checksummed safetensors shard cache: hits skip Sionna, corruption is caught, writes are atomic."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rantune.channels as channels
import rantune.channels.cache as cache_module
import rantune.channels.sionna_generator as generator
from rantune.channels import CorruptCacheError, load_pooled, load_sites
from rantune.channels.cache import ShardCache
from rantune.channels.dataset import ChannelDataset
from rantune.config import DataConfig, RadioConfig, SiteConfig

RADIO = RadioConfig(num_bs_antennas=4, num_subcarriers=8, num_beams=4, num_time_steps=2)
CFG = DataConfig(
    name="cache-test",
    radio=RADIO,
    sites=(
        SiteConfig(name="a", scenario="umi", num_samples=12, seed=1),
        SiteConfig(name="b", scenario="rma", num_samples=7, seed=2, distance_range_m=(35, 900)),
    ),
)


def fake_site(cfg: DataConfig, index: int, advance) -> ChannelDataset:
    """Synthetic stand-in for Sionna: random values with every documented field and dtype."""
    site = cfg.sites[index]
    n, a, s, k = site.num_samples, cfg.radio.num_bs_antennas, cfg.radio.num_subcarriers, 4
    rng = np.random.default_rng(site.seed)

    def cplx(*shape):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)

    sequence = cplx(n, cfg.radio.num_time_steps, a, s)
    data = ChannelDataset(
        {
            "csi": sequence[:, 0].copy(),
            "csi_noisy": cplx(n, a, s),
            "csi_norm": rng.random(n).astype(np.float32),
            "los": rng.integers(0, 2, n).astype(np.int8),
            "indoor": rng.integers(0, 2, n).astype(np.int8),
            "beam_index": rng.integers(0, k, n).astype(np.int64),
            "beam_gains": rng.random((n, k)).astype(np.float32),
            "ut_position": rng.random((n, 3)).astype(np.float32),
            "distance_2d": rng.random(n).astype(np.float32),
            "speed": rng.random(n).astype(np.float32),
            "snr_db": rng.random(n).astype(np.float32),
            "site_index": np.full(n, index, dtype=np.int64),
            "csi_sequence": sequence,
        }
    )
    if advance is not None:
        advance(n)
    return data


def no_sionna(*args, **kwargs):
    raise AssertionError("Sionna was called although the data is cached")


@pytest.fixture
def counting(monkeypatch):
    """Replace generation with ``fake_site``; return the list of generated site indices."""
    calls: list[int] = []

    def generate(cfg, index, advance):
        calls.append(index)
        return fake_site(cfg, index, advance)

    monkeypatch.setattr(channels, "_generate", generate)
    return calls


def shard_path(root, cfg: DataConfig, index: int):
    return ShardCache(root).paths(cfg.site_hash(cfg.sites[index]))


def assert_same(left: list[ChannelDataset], right: list[ChannelDataset]) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        assert set(a.arrays) == set(b.arrays)
        for name in a.arrays:
            assert a[name].dtype == b[name].dtype, name
            assert a[name].tobytes() == b[name].tobytes(), name


def test_round_trip_is_bit_exact_and_cache_hit_does_not_call_sionna(
    tmp_path, monkeypatch, counting
):
    # Prepare
    first = load_sites(CFG, cache_root=tmp_path, progress=False)
    monkeypatch.setattr(channels, "_generate", no_sionna)
    monkeypatch.setattr(generator, "generate_site", no_sionna)

    # Execute
    again = load_sites(CFG, cache_root=tmp_path, progress=False)

    # Assert
    assert counting == [0, 1]
    assert_same(first, again)
    record = json.loads(shard_path(tmp_path, CFG, 0)[1].read_text())
    assert record["num_samples"] == 12 and record["site"]["name"] == "a"
    assert record["key"] == CFG.site_hash(CFG.sites[0])


def test_real_sionna_shards_reload_without_sionna(smoke_cfg, smoke_sites, monkeypatch):
    # Prepare: smoke_sites generated (or loaded) the smoke preset into the session cache
    monkeypatch.setattr(channels, "_generate", no_sionna)
    monkeypatch.setattr(generator, "generate_site", no_sionna)

    # Execute
    reloaded = load_sites(smoke_cfg, progress=False)

    # Assert
    assert_same(smoke_sites, reloaded)


def test_only_missing_or_changed_sites_are_generated(tmp_path, counting):
    # Prepare
    load_sites(CFG, cache_root=tmp_path, progress=False)
    bigger_a = SiteConfig(name="a", scenario="umi", num_samples=13, seed=1)
    changed = DataConfig(name="other-name", radio=RADIO, sites=(CFG.sites[1], bigger_a))

    # Execute
    data = load_sites(changed, cache_root=tmp_path, progress=False)

    # Assert: site b is shared (only its position changed), site a changed size
    assert counting == [0, 1, 1]
    assert [len(d) for d in data] == [7, 13]
    assert np.all(data[0]["site_index"] == 0) and np.all(data[1]["site_index"] == 1)


def test_load_pooled_stacks_sites_in_order(tmp_path, counting):
    # Prepare / Execute
    pooled = load_pooled(CFG, cache_root=tmp_path, progress=False)

    # Assert
    assert len(pooled) == 19
    assert np.array_equal(pooled["site_index"], np.repeat([0, 1], [12, 7]))


@pytest.mark.parametrize("damage", ["flip", "truncate", "append", "empty"])
def test_corrupted_shard_raises_documented_error(tmp_path, counting, damage):
    # Prepare
    load_sites(CFG, cache_root=tmp_path, progress=False)
    shard, _ = shard_path(tmp_path, CFG, 1)
    payload = bytearray(shard.read_bytes())
    if damage == "flip":
        payload[len(payload) // 2] ^= 0xFF
    elif damage == "truncate":
        payload = payload[: len(payload) // 2]
    elif damage == "append":
        payload += b"\0"
    else:
        payload = bytearray()
    shard.write_bytes(bytes(payload))

    # Execute
    with pytest.raises(CorruptCacheError) as info:
        load_sites(CFG, cache_root=tmp_path, progress=False)

    # Assert
    message = str(info.value)
    assert str(shard) in message
    assert "corrupted" in message and "sha256" in message
    assert "--rebuild" in message
    assert isinstance(info.value, ValueError)  # the CLI turns it into a clean exit
    assert counting == [0, 1]  # never silently regenerated or used


def test_shard_that_matches_its_checksum_but_is_not_safetensors_is_rejected(tmp_path, counting):
    # Prepare
    load_sites(CFG, cache_root=tmp_path, progress=False)
    shard, meta = shard_path(tmp_path, CFG, 0)
    shard.write_bytes(b"not a safetensors file")
    record = json.loads(meta.read_text())
    record["sha256"] = cache_module.sha256_file(shard)
    meta.write_text(json.dumps(record))

    # Execute / Assert
    with pytest.raises(CorruptCacheError, match="cannot be parsed"):
        load_sites(CFG, cache_root=tmp_path, progress=False)


def test_unreadable_metadata_raises_documented_error(tmp_path, counting):
    # Prepare
    load_sites(CFG, cache_root=tmp_path, progress=False)
    _, meta = shard_path(tmp_path, CFG, 0)
    meta.write_text('{"sha256": ')

    # Execute / Assert
    with pytest.raises(CorruptCacheError, match=f"metadata {meta} is unreadable"):
        load_sites(CFG, cache_root=tmp_path, progress=False)


def test_rebuild_repairs_a_corrupted_shard(tmp_path, counting):
    # Prepare
    original = load_sites(CFG, cache_root=tmp_path, progress=False)
    shard, _ = shard_path(tmp_path, CFG, 0)
    shard.write_bytes(shard.read_bytes()[:100])

    # Execute
    rebuilt = load_sites(CFG, cache_root=tmp_path, rebuild=True, progress=False)
    reloaded = load_sites(CFG, cache_root=tmp_path, progress=False)

    # Assert
    assert counting == [0, 1, 0, 1]
    assert_same(original, rebuilt)
    assert_same(original, reloaded)


def test_writes_are_atomic_and_leave_no_temp_files(tmp_path, counting):
    # Prepare / Execute
    load_sites(CFG, cache_root=tmp_path, progress=False)
    load_sites(CFG, cache_root=tmp_path, rebuild=True, progress=False)

    # Assert
    names = sorted(p.name for p in (tmp_path / "sites").iterdir())
    assert len(names) == 4
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]


def test_failed_shard_write_keeps_the_old_entry_and_no_temp_file(tmp_path, counting, monkeypatch):
    # Prepare
    original = load_sites(CFG, cache_root=tmp_path, progress=False)

    def crash(tensors, filename):
        with open(filename, "wb") as handle:
            handle.write(b"half a shard")
        raise OSError("disk full")

    monkeypatch.setattr(cache_module, "save_file", crash)

    # Execute
    with pytest.raises(OSError, match="disk full"):
        load_sites(CFG, cache_root=tmp_path, rebuild=True, progress=False)
    monkeypatch.undo()
    monkeypatch.setattr(channels, "_generate", no_sionna)
    reloaded = load_sites(CFG, cache_root=tmp_path, progress=False)

    # Assert
    assert_same(original, reloaded)
    assert not list((tmp_path / "sites").glob(".*"))


def test_interrupted_rebuild_is_regenerated_not_used(tmp_path, counting, monkeypatch):
    # Prepare: a rebuild dies after the new shard is in place but before its metadata
    original = load_sites(CFG, cache_root=tmp_path, progress=False)
    write_json = cache_module.atomic_write_json

    def interrupted(path, payload):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_module, "atomic_write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_sites(CFG, cache_root=tmp_path, rebuild=True, progress=False)
    monkeypatch.setattr(cache_module, "atomic_write_json", write_json)

    # Execute
    present = ShardCache(tmp_path).contains(CFG.site_hash(CFG.sites[0]))
    reloaded = load_sites(CFG, cache_root=tmp_path, progress=False)

    # Assert: the half-committed entry counts as missing and is generated again
    assert not present
    assert counting == [0, 1, 0, 0]
    assert_same(original, reloaded)
