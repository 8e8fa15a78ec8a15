"""What a federated run trains on: the model (frozen base + LoRA) and the data splits.

Both are built once per process and cached at module level, keyed by the parts of
the run config that define them, so a ClientApp process that serves many rounds
(or many base stations) loads the channel cache and the checkpoint only once.

Seeds are functions of the run seed and a purpose (:func:`derive_seed`), never of
the call order, so a resumed run draws the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rantune.channels import ChannelDataset, load_sites
from rantune.config import DataConfig
from rantune.errors import InputError
from rantune.federated.run_config import RunConfig
from rantune.lora import LoraSettings, apply_lora, trainable_state
from rantune.model import ChannelEncoder, load_checkpoint, model_config
from rantune.model.checkpoint import SHIPPED_DIR
from rantune.partition import PartitionConfig, Partitioning, partition
from rantune.presets import load_preset
from rantune.tasks import Task, build_task_model, get_task
from rantune.tasks.classification import BeamTask, LosTask

_LOCK = threading.RLock()


def derive_seed(*parts: int | str) -> int:
    """A 31-bit seed from any mix of ints and strings (order matters)."""
    words = []
    for part in parts:
        if isinstance(part, str):
            words.extend(part.encode())
        else:
            words.append(int(part) & 0xFFFFFFFF)
    return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)


def client_round_seed(seed: int, server_round: int, partition_id: int) -> int:
    """Seed of one client's local training in one round: a function of all three."""
    return derive_seed(seed, "client-train", server_round, partition_id)


def apply_threads(cfg: RunConfig) -> None:
    """Use ``torch-threads`` intra-op threads (0 = leave torch's default).

    One thread is the default: on small models several threads per process gain
    little, and on a loaded machine their spin-waits cost 10x or more.
    """
    if cfg.torch_threads > 0 and torch.get_num_threads() != cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)


# ----------------------------------------------------------------------------- model


def resolve_checkpoint(name: str) -> Path:
    """Path of a pretrained encoder: a shipped name (``tiny``) or a .safetensors path.

    Inside ``flwr run`` the app runs from a FAB copy of this repository, which holds
    only text files; the shipped weights are then found in the installed package
    (site-packages or the editable checkout).
    """
    path = Path(name).expanduser()
    if path.suffix == ".safetensors":
        if not path.exists():
            raise InputError(f"model.pretrained={name!r}: file not found")
        return path
    candidates = [SHIPPED_DIR / f"{name}.safetensors"]
    try:
        from importlib import metadata

        dist = metadata.distribution("rantune")
        candidates.append(Path(str(dist.locate_file(f"rantune/checkpoints/{name}.safetensors"))))
        direct = dist.read_text("direct_url.json")
        if direct:
            url = json.loads(direct).get("url", "")
            if url.startswith("file://"):
                root = Path(url.removeprefix("file://"))
                candidates.append(root / "rantune" / "checkpoints" / f"{name}.safetensors")
    except Exception:  # noqa: BLE001 - not installed as a distribution: only SHIPPED_DIR
        pass
    for candidate in candidates:
        if candidate.exists() and candidate.with_suffix(".json").exists():
            return candidate
    raise InputError(
        f"model.pretrained={name!r}: no shipped checkpoint found (looked in "
        f"{sorted({str(c.parent) for c in candidates})}); give a .safetensors path, or set "
        'model.pretrained="none" for a seeded random encoder (no pretraining)'
    )


@lru_cache(maxsize=4)
def _base_encoder(pretrained: str, size: str, seed: int) -> ChannelEncoder:
    if pretrained.strip().lower() in ("", "none"):
        torch.manual_seed(derive_seed(seed, "random-base"))
        encoder = ChannelEncoder(model_config(size))
    else:
        encoder, _ = load_checkpoint(resolve_checkpoint(pretrained))
    encoder.eval()
    for param in encoder.parameters():
        param.requires_grad_(False)
    return encoder


def base_encoder(cfg: RunConfig) -> ChannelEncoder:
    """The frozen base encoder (shared, never modify it: :func:`build_model` copies)."""
    seed = cfg.seed if cfg.model.is_random else 0
    with _LOCK:
        return _base_encoder(cfg.model.pretrained, cfg.model.size, seed)


def lora_settings(cfg: RunConfig, rank: int | None = None) -> LoraSettings:
    """The run's LoRA settings, optionally with another rank (per-node ``lora-r``)."""
    lora = cfg.lora
    if rank is None or rank == lora.r:
        return lora
    return LoraSettings(r=int(rank), alpha=lora.alpha, dropout=lora.dropout, targets=lora.targets)


def model_task(cfg: RunConfig) -> Task:
    """The run's task with its configured head (``model.head`` for LoS and beam)."""
    if cfg.task == "los":
        return LosTask(head=cfg.model.head)
    if cfg.task == "beam":
        return BeamTask(head=cfg.model.head)
    return get_task(cfg.task)


def build_model(cfg: RunConfig, rank: int | None = None, init_seed: int | None = None):
    """A fresh peft task model: frozen base + LoRA adapters + trainable head.

    Parameters
    ----------
    cfg : run config (task, preset radio, model, lora).
    rank : LoRA rank (default ``cfg.lora.r``).
    init_seed : seeds the head and adapter initialisation (default: derived from
        ``cfg.seed``), so the server's initial global state is reproducible.
    """
    task = model_task(cfg)
    radio = preset(cfg).radio
    seed = derive_seed(cfg.seed, "init") if init_seed is None else init_seed
    with _LOCK:
        encoder = copy.deepcopy(base_encoder(cfg))
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            model = apply_lora(build_task_model(task, encoder, radio), lora_settings(cfg, rank))
        finally:
            torch.random.set_rng_state(state)
    model.eval()
    return model


_MODELS: dict[tuple, object] = {}


def cached_model(cfg: RunConfig, rank: int | None = None):
    """A per-process model for repeated use (its trainable state is overwritten by the
    caller before every use)."""
    key = (
        cfg.task,
        cfg.data.preset,
        cfg.model.pretrained,
        cfg.model.size,
        cfg.model.head,
        cfg.seed if cfg.model.is_random else 0,
        lora_settings(cfg, rank),
    )
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = build_model(cfg, rank)
        return _MODELS[key]


def initial_global_state(cfg: RunConfig) -> dict[str, Tensor]:
    """The global adapters + head before round 1 (seeded by ``cfg.seed``)."""
    return trainable_state(build_model(cfg))


def full_model_parameters(cfg: RunConfig) -> dict[str, Tensor]:
    """Every parameter of the un-adapted task model (encoder + head): what full-model
    FedAvg would send each way."""
    task = model_task(cfg)
    with _LOCK:
        encoder = copy.deepcopy(base_encoder(cfg))
        model = build_task_model(task, encoder, preset(cfg).radio)
    return {k: v.detach() for k, v in model.named_parameters()}


# ------------------------------------------------------------------------------ data


def preset(cfg: RunConfig) -> DataConfig:
    """The run's preset with the data seed applied."""
    return _preset(cfg.data.preset, cfg.data.seed)


@lru_cache(maxsize=8)
def _preset(name: str, seed: int) -> DataConfig:
    return load_preset(name).with_seed(seed)


@dataclass(frozen=True)
class FederatedData:
    """Pooled channel data of a preset and its partitioning into clients."""

    pooled: ChannelDataset
    parts: Partitioning

    @property
    def num_clients(self) -> int:
        return len(self.parts.clients)


_DATA: dict[tuple, FederatedData] = {}


def partition_config(cfg: RunConfig) -> PartitionConfig:
    """The run's partition config; the global test share is the preset's ``test_fraction``."""
    return replace(cfg.partition, global_test_fraction=preset(cfg).test_fraction)


_TENSORS: dict[tuple, tuple[Tensor, Tensor]] = {}


def _data_key(cfg: RunConfig) -> tuple:
    return (cfg.data.preset, cfg.data.seed, cfg.data.cache, cfg.partition)


def federated_data(cfg: RunConfig) -> FederatedData:
    """Pooled data + partitioning, loaded from the channel cache once per process."""
    key = _data_key(cfg)
    with _LOCK:
        if key not in _DATA:
            sites = load_sites(preset(cfg), cache_root=cfg.data.cache or None, progress=False)
            pooled = ChannelDataset.concat(sites)
            labels = {"beam": pooled["beam_index"], "los": pooled["los"].astype(np.int64)}
            _DATA[key] = FederatedData(
                pooled, partition(pooled["site_index"], labels, cfg.partition)
            )
        return _DATA[key]


def split_rows(cfg: RunConfig, client: int | None, split: str) -> np.ndarray:
    """Row indices of a client's ``train``/``val``/``test`` split, or of the global test
    set (``client=None, split="test"``)."""
    data = federated_data(cfg)
    if client is None:
        if split != "test":
            raise InputError("only the global test split exists without a client")
        return cap_rows(cfg, data.parts.global_test, client, split)
    check_partition_id(client, data.num_clients)
    return cap_rows(cfg, getattr(data.parts.clients[client], split), client, split)


def row_caps(cfg: RunConfig) -> tuple[int, int, int]:
    """``(data.max-train-rows, data.max-eval-rows, data.max-global-test-rows)``; 0 = no cap."""
    d = cfg.data
    return d.max_train_rows, d.max_eval_rows, d.max_global_test_rows


def cap_rows(cfg: RunConfig, rows: np.ndarray, client: int | None, split: str) -> np.ndarray:
    """A seeded subset of ``rows`` when the split's cap (``data.max-train-rows`` for a
    client's ``train``, ``data.max-eval-rows`` for its ``val``/``test``,
    ``data.max-global-test-rows`` for the global test set) is below its size; the same
    rows every call (seeded by the data seed, client and split), original order."""
    cap = row_caps(cfg)[2 if client is None else 0 if split == "train" else 1]
    if cap == 0 or len(rows) <= cap:
        return rows
    rng = np.random.default_rng(
        derive_seed(cfg.data.seed, "row-cap", split, -1 if client is None else client)
    )
    return np.sort(rng.choice(np.asarray(rows), size=cap, replace=False))


def tensors(cfg: RunConfig, client: int | None, split: str) -> tuple[Tensor, Tensor]:
    """Task inputs and targets of one split (cached per process)."""
    key = (_data_key(cfg), row_caps(cfg), cfg.task, client, split)
    with _LOCK:
        if key not in _TENSORS:
            task: Task = get_task(cfg.task)
            rows = split_rows(cfg, client, split)
            _TENSORS[key] = task.tensors(federated_data(cfg).pooled, rows)
        return _TENSORS[key]


def check_partition_id(partition_id: int, num_clients: int) -> None:
    if not isinstance(partition_id, int) or not 0 <= partition_id < num_clients:
        raise InputError(
            f"partition-id {partition_id!r} is out of range: this run's partitioning has "
            f"{num_clients} clients (0..{num_clients - 1}); run as many SuperNodes as clients "
            "(options.num-supernodes) or change partition.num-clients"
        )


def clear_caches() -> None:
    """Drop every per-process cache (tests, long-lived sweep processes)."""
    with _LOCK:
        _MODELS.clear()
        _DATA.clear()
        _TENSORS.clear()
        _base_encoder.cache_clear()
