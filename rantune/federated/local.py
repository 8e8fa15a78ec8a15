"""A base station's job: its own data, its model, its settings; local training and evaluation.

A :class:`LocalJob` is built once per base station and process (by
:class:`rantune.client.jobs.JobRegistry`) and kept between rounds: it holds the
tensors of its own train/validation/test rows, its LoRA rank and initial adapter
state, and takes its model from the process's shared
:class:`~rantune.federated.downlink.ModelPool`. Flower-free except for the records it
returns and the node state it keeps (``context.state``, a RecordDict that stays on
the node): ``client/app.py`` only unpacks the message and calls
:meth:`LocalJob.train` / :meth:`LocalJob.evaluate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict

from rantune import lora_sb
from rantune.errors import InputError
from rantune.federated import downlink, ranks, splits
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
from rantune.federated.run_config import LocalTrainSection, RunConfig
from rantune.federated.workload import apply_threads, model_spec
from rantune.lora import load_trainable_state, trainable_state
from rantune.seeding import derive_seed
from rantune.tasks import get_task
from rantune.training import TrainSettings, evaluate, train

LOCAL_STATE_KEY = "rantune.local-params"
RESIDUAL_KEY = "rantune.ef-residual"


DATA_PATH = "data-path"


@dataclass(frozen=True)
class NodeIdentity:
    """Which base station a node is: its partition, LoRA rank and, on a deployed
    node, where its own station data set lives (node-config ``data-path``; ``""`` = the
    run's preset from the channel cache, as in simulation)."""

    partition_id: int
    num_partitions: int
    rank: int
    data_path: str = ""


def node_identity(cfg: RunConfig, node_config: Mapping[str, object]) -> NodeIdentity:
    """Read and check ``partition-id``, ``num-partitions``, optional ``lora-r`` and
    ``data-path`` (no data is loaded)."""
    if "partition-id" not in node_config:
        raise InputError(
            "node config has no partition-id: start the SuperNode with --node-config "
            "'partition-id=<i> num-partitions=<n>' (simulation sets it automatically)"
        )
    pid, num = node_config.get("partition-id"), node_config.get("num-partitions")
    num_clients = splits.num_clients(cfg.data, cfg.partition)
    splits.check_partition_id(pid, num_clients)
    if num is not None and num != num_clients:
        raise InputError(
            f"num-partitions={num} but the run config partitions the data into {num_clients} "
            "clients: run one SuperNode per client or set partition.num-clients"
        )
    rank = node_config.get(LORA_RANK, ranks.scheduled_rank(cfg, int(pid)))
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise InputError(f"node config lora-r={rank!r} is invalid: expected an integer >= 1")
    data_path = node_config.get(DATA_PATH, "")
    if not isinstance(data_path, str):
        raise InputError(
            f'node config data-path={data_path!r} is invalid: give a quoted directory path '
            '(data-path="/data/bs-3")'
        )
    return NodeIdentity(int(pid), int(num_clients), int(rank), data_path)


def node_data(cfg: RunConfig, node: NodeIdentity) -> splits.FederatedData:
    """The data a node reads: its own station directory (``data-path``) or the preset's
    stations from the channel cache (simulation). Checks the station's identity."""
    if node.data_path:
        return splits.FederatedData.of_node(cfg.data, cfg.partition, node.partition_id, node.data_path)
    return splits.FederatedData.load(cfg.data, cfg.partition)


def client_round_seed(seed: int, server_round: int, partition_id: int) -> int:
    """Seed of one client's local training in one round: a function of all three."""
    return derive_seed(seed, "client-train", server_round, partition_id)


def train_settings(
    config: Mapping[str, object], defaults: LocalTrainSection, seed: int
) -> TrainSettings:
    """Local optimisation settings: the train config's keys over the run's defaults."""
    return TrainSettings(
        epochs=int(config.get("local-epochs", defaults.local_epochs)),
        batch_size=int(config.get("batch-size", defaults.batch_size)),
        lr=float(config.get("lr", defaults.lr)),
        weight_decay=float(config.get("weight-decay", defaults.weight_decay)),
        prox_mu=float(config.get("proximal-mu", 0.0)),
        max_grad_norm=float(config.get("max-grad-norm", defaults.max_grad_norm)),
        seed=seed,
    )


def _held(node_state: RecordDict) -> dict[str, np.ndarray]:
    if LOCAL_STATE_KEY in node_state.array_records:
        return record_to_state(node_state.array_records[LOCAL_STATE_KEY])
    return {}


def _state_key(param_name: str) -> str:
    """peft parameter name -> the key trainable_state uses for it."""
    return param_name.replace(".modules_to_save.default", "").replace(".default", "")


def _load(model, state: Mapping[str, np.ndarray]) -> None:
    load_trainable_state(model, {k: torch.from_numpy(np.array(v)) for k, v in state.items()})


class LocalJob:
    """One base station's job in one run: its rows, its model spec and its settings.

    Parameters
    ----------
    cfg : the run config (task, seed, model, LoRA, local-training defaults, attack).
    node : the station's partition id and LoRA rank.
    data : the run's stations; only this station's rows are read (memory-mapped) from it.
    models : the process's model pool (shared by every job of the process).

    Attributes
    ----------
    train_xy, val_xy, test_xy : ``(inputs, targets)`` of the station's splits (task
        shapes, e.g. ``[N, 2, A, S]`` float32 inputs).
    init_state : ``{key: ndarray}`` the model's seeded initial adapters + head at this
        station's rank: what a key the server does not send starts from.
    """

    def __init__(
        self,
        cfg: RunConfig,
        node: NodeIdentity,
        data: splits.FederatedData,
        models: downlink.ModelPool,
    ) -> None:
        self.cfg = cfg
        self.node = node
        self.task = get_task(cfg.task, cfg.task_options)
        self.spec = model_spec(cfg, node.rank)
        self.models = models
        self.init_state = models.init_state(self.spec)
        pid = node.partition_id
        self.train_xy = data.tensors(self.task, pid, "train")
        self.val_xy = data.tensors(self.task, pid, "val")
        self.test_xy = data.tensors(self.task, pid, "test")

    @property
    def trainable_keys(self) -> list[str]:
        """Names of the adapter and head tensors of this station's model, sorted."""
        return sorted(self.init_state)

    def _received(self, received: ArrayRecord, config: Mapping[str, object]):
        state, deltas = downlink.unpack(record_to_state(received), config, self.init_state)
        return state, self.models.model(self.spec, deltas)

    def compose(
        self, received: Mapping[str, np.ndarray], held: Mapping[str, np.ndarray] | None
    ) -> dict[str, np.ndarray]:
        """Full trainable state: fresh init <- received global <- locally held tensors."""
        base = self.init_state
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
                    f"{tuple(base[key].shape)} (LoRA rank {self.node.rank}); heterogeneous "
                    "ranks need a rank-aware strategy"
                )
        state = dict(base)
        state.update(received)
        if held:
            state.update({k: v for k, v in held.items() if k in base})
        return state

    def train(
        self, received: ArrayRecord, config: Mapping[str, object], node_state: RecordDict
    ) -> tuple[ArrayRecord, dict[str, float | int]]:
        """Train the received global adapters + head on this station's training split.

        Returns the (possibly compressed) ArrayRecord to send back and the reply
        metrics: ``num-examples``, ``partition-id``, ``lora-r``, ``train-loss``,
        ``train-steps`` and ``val-<metric>`` on the local validation split.
        """
        apply_threads(self.cfg.torch_threads)
        node = self.node
        server_round = int(config.get("server-round", 0))
        received_state, model = self._received(received, config)
        keep_local = str(config.get(KEEP_LOCAL, "") or "")
        held = _held(node_state) if keep_local else {}
        held = {k: v for k, v in held.items() if k in select_keys(held, keep_local)}
        state = self.compose(received_state, held)

        _load(model, state)
        frozen = select_keys(state, str(config.get(FREEZE, "") or ""))
        switched = []
        for name, param in model.named_parameters():
            if param.requires_grad and _state_key(name) in frozen:
                param.requires_grad_(False)
                switched.append(param)
        seed = client_round_seed(self.cfg.seed, server_round, node.partition_id)
        settings = train_settings(config, self.cfg.train, seed)
        try:
            with lora_sb.only_r_trains(model, record_to_state(received), config) as sb:
                result = train(model, self.task, *self.train_xy, settings)
            val = evaluate(model, self.task, *self.val_xy)
        finally:
            for param in switched:
                param.requires_grad_(True)
        trained = {k: to_numpy(v) for k, v in trainable_state(model).items()}
        trained.update(sb.trained)  # Fed-SB: R travels (not B R)
        received_state.update(sb.received)

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
            self.cfg,
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

    def evaluate(
        self, received: ArrayRecord, config: Mapping[str, object], node_state: RecordDict
    ) -> dict[str, float | int]:
        """Evaluate the received global model on this station's local test split.

        With ``personalized`` in the config, also evaluates the model with this node's
        locally held tensors (``keep-local``) and reports those as ``personalized-<m>``.
        With ``client-validation`` in the run config, the same model(s) on the local
        validation split as ``val-<m>`` (``personalized-val-<m>``).
        """
        apply_threads(self.cfg.torch_threads)
        received_state, model = self._received(received, config)
        splits = {"": self.test_xy}
        if self.cfg.client_validation:
            splits["val-"] = self.val_xy

        def run(held, prefix: str) -> dict:
            _load(model, self.compose(received_state, held))
            out = {}
            for split, xy in splits.items():
                result = evaluate(model, self.task, *xy)
                count = int(result.pop("num_examples"))
                if not split:
                    out[NUM_EXAMPLES] = count
                out.update({prefix + split + k: float(v) for k, v in result.items()})
            return out

        metrics: dict[str, float | int] = {PARTITION_ID: self.node.partition_id}
        metrics.update(run(None, ""))
        if bool(config.get(PERSONALIZED, False)):
            personal = run(_held(node_state), PERSONALIZED_PREFIX)
            personal.pop(NUM_EXAMPLES)
            metrics.update(personal)
        return metrics
