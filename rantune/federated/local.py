"""A base station's side of a round: local LoRA training and local evaluation.

Flower-free except for the records it returns and the node state it keeps
(``context.state``, a RecordDict that stays on the node): ``client/app.py`` only
unpacks the message and calls :func:`local_train` / :func:`local_evaluate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict

from rantune.errors import InputError
from rantune.federated import downlink, ranks, workload
from rantune.federated.attacks import maybe_attack
from rantune.federated.compression import encode_update, settings_from_config
from rantune.federated.messages import (
    FREEZE,
    KEEP_LOCAL,
    LORA_RANK,
    NUM_EXAMPLES,
    PARTITION_ID,
    PERSONALIZED,
    PERSONALIZED_PREFIX,
    expected_reply_keys,
    record_to_state,
    select_keys,
    state_to_record,
    to_numpy,
)
from rantune.federated.run_config import RunConfig
from rantune.lora import load_trainable_state, trainable_state
from rantune.tasks import get_task
from rantune.training import TrainSettings, evaluate, train

LOCAL_STATE_KEY = "rantune.local-params"
RESIDUAL_KEY = "rantune.ef-residual"


@dataclass(frozen=True)
class NodeIdentity:
    """Which base station a node is: its partition and LoRA rank."""

    partition_id: int
    num_partitions: int
    rank: int


def node_identity(cfg: RunConfig, node_config: Mapping[str, object]) -> NodeIdentity:
    """Read and check ``partition-id``, ``num-partitions`` and optional ``lora-r``."""
    if "partition-id" not in node_config:
        raise InputError(
            "node config has no partition-id: start the SuperNode with --node-config "
            "'partition-id=<i> num-partitions=<n>' (simulation sets it automatically)"
        )
    pid, num = node_config.get("partition-id"), node_config.get("num-partitions")
    num_clients = workload.federated_data(cfg).num_clients
    workload.check_partition_id(pid, num_clients)
    if num is not None and num != num_clients:
        raise InputError(
            f"num-partitions={num} but the run config partitions the data into {num_clients} "
            "clients: run one SuperNode per client or set partition.num-clients"
        )
    rank = node_config.get(LORA_RANK, ranks.scheduled_rank(cfg, int(pid)))
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise InputError(f"node config lora-r={rank!r} is invalid: expected an integer >= 1")
    return NodeIdentity(int(pid), int(num_clients), int(rank))


_INIT: dict[tuple, dict[str, np.ndarray]] = {}


def _init_state(cfg: RunConfig, rank: int) -> dict[str, np.ndarray]:
    key = (cfg.identity_hash(), rank)
    if key not in _INIT:
        model = workload.build_model(cfg, rank)
        _INIT[key] = {k: to_numpy(v) for k, v in trainable_state(model).items()}
    return _INIT[key]


def _compose(
    cfg: RunConfig,
    node: NodeIdentity,
    received: Mapping[str, np.ndarray],
    held: Mapping[str, np.ndarray] | None,
) -> dict[str, np.ndarray]:
    """Full trainable state: fresh init <- received global <- locally held tensors."""
    base = _init_state(cfg, node.rank)
    unknown = sorted(set(received) - set(base))
    if unknown:
        raise InputError(
            f"received tensors the local model does not have: {unknown[:3]} (only adapter "
            "and head keys of rantune.lora.trainable_state may travel)"
        )
    for key, value in received.items():
        if tuple(value.shape) != tuple(base[key].shape):
            raise InputError(
                f"received {key} with shape {tuple(value.shape)}, but this node trains "
                f"{tuple(base[key].shape)} (LoRA rank {node.rank}); heterogeneous ranks need "
                "a rank-aware strategy"
            )
    state = dict(base)
    state.update(received)
    if held:
        state.update({k: v for k, v in held.items() if k in base})
    return state


def _held(node_state: RecordDict) -> dict[str, np.ndarray]:
    if LOCAL_STATE_KEY in node_state.array_records:
        return record_to_state(node_state.array_records[LOCAL_STATE_KEY])
    return {}


def _state_key(param_name: str) -> str:
    """peft parameter name -> the key trainable_state uses for it."""
    return param_name.replace(".modules_to_save.default", "").replace(".default", "")


def local_train(
    cfg: RunConfig,
    node: NodeIdentity,
    received: ArrayRecord,
    config: Mapping[str, object],
    node_state: RecordDict,
) -> tuple[ArrayRecord, dict[str, float | int]]:
    """Train the received global adapters + head on this node's training split.

    Returns the (possibly compressed) ArrayRecord to send back and the reply metrics:
    ``num-examples``, ``partition-id``, ``lora-r``, ``train-loss``, ``train-steps``
    and ``val-<metric>`` on the local validation split.
    """
    workload.apply_threads(cfg)
    task = get_task(cfg.task)
    server_round = int(config.get("server-round", 0))
    received_state, deltas = downlink.unpack(
        record_to_state(received), config, _init_state(cfg, node.rank)
    )
    keep_local = str(config.get(KEEP_LOCAL, "") or "")
    held = _held(node_state) if keep_local else {}
    held = {k: v for k, v in held.items() if k in select_keys(held, keep_local)}
    state = _compose(cfg, node, received_state, held)

    model = downlink.model_for(cfg, node.rank, deltas)
    load_trainable_state(model, {k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    frozen = select_keys(state, str(config.get(FREEZE, "") or ""))
    switched = []
    for name, param in model.named_parameters():
        if param.requires_grad and _state_key(name) in frozen:
            param.requires_grad_(False)
            switched.append(param)
    settings = TrainSettings(
        epochs=int(config.get("local-epochs", cfg.train.local_epochs)),
        batch_size=int(config.get("batch-size", cfg.train.batch_size)),
        lr=float(config.get("lr", cfg.train.lr)),
        weight_decay=float(config.get("weight-decay", cfg.train.weight_decay)),
        prox_mu=float(config.get("proximal-mu", 0.0)),
        max_grad_norm=float(config.get("max-grad-norm", cfg.train.max_grad_norm)),
        seed=workload.client_round_seed(cfg.seed, server_round, node.partition_id),
    )
    try:
        x, y = workload.tensors(cfg, node.partition_id, "train")
        result = train(model, task, x, y, settings)
        xv, yv = workload.tensors(cfg, node.partition_id, "val")
        val = evaluate(model, task, xv, yv)
    finally:
        for param in switched:
            param.requires_grad_(True)
    trained = {k: to_numpy(v) for k, v in trainable_state(model).items()}

    if keep_local:
        kept = select_keys(trained, keep_local)
        node_state[LOCAL_STATE_KEY] = state_to_record({k: trained[k] for k in kept})
    reply_keys = expected_reply_keys(received_state, config)
    compression = settings_from_config(config)
    residual = None
    if compression.error_feedback and RESIDUAL_KEY in node_state.array_records:
        residual = node_state.array_records[RESIDUAL_KEY]["residual"].numpy()
    reference = {k: received_state[k] for k in reply_keys}
    upload = maybe_attack(
        cfg,
        node.partition_id,
        node.num_partitions,
        server_round,
        reference,
        {k: trained[k] for k in reply_keys},
    )
    record, new_residual = encode_update(reference, upload, compression, residual)
    if new_residual is not None:
        node_state[RESIDUAL_KEY] = state_to_record({"residual": new_residual})
    metrics: dict[str, float | int] = {
        NUM_EXAMPLES: int(result["num_examples"]),
        PARTITION_ID: node.partition_id,
        LORA_RANK: node.rank,
        "train-loss": float(result["loss"]),
        "train-steps": int(result["steps"]),
    }
    metrics.update({f"val-{k}": float(v) for k, v in val.items() if k != "num_examples"})
    return record, metrics


def local_evaluate(
    cfg: RunConfig,
    node: NodeIdentity,
    received: ArrayRecord,
    config: Mapping[str, object],
    node_state: RecordDict,
) -> dict[str, float | int]:
    """Evaluate the received global model on this node's local test split.

    With ``personalized`` in the config, also evaluates the model with this node's
    locally held tensors (``keep-local``) and reports those as ``personalized-<m>``.
    """
    workload.apply_threads(cfg)
    task = get_task(cfg.task)
    received_state, deltas = downlink.unpack(
        record_to_state(received), config, _init_state(cfg, node.rank)
    )
    model = downlink.model_for(cfg, node.rank, deltas)
    x, y = workload.tensors(cfg, node.partition_id, "test")

    def run(held):
        state = _compose(cfg, node, received_state, held)
        load_trainable_state(model, {k: torch.from_numpy(np.array(v)) for k, v in state.items()})
        return evaluate(model, task, x, y)

    result = run(None)
    metrics: dict[str, float | int] = {
        NUM_EXAMPLES: int(result.pop("num_examples")),
        PARTITION_ID: node.partition_id,
    }
    metrics.update({k: float(v) for k, v in result.items()})
    if bool(config.get(PERSONALIZED, False)):
        personal = run(_held(node_state))
        personal.pop("num_examples")
        metrics.update({PERSONALIZED_PREFIX + k: float(v) for k, v in personal.items()})
    return metrics
