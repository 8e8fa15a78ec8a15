"""The bookkeeping of one round: its messages, its per-client entries, its record.

Shared by the plain round loop (:mod:`rantune.server.loop`) and the SecAgg+ runner
(:mod:`rantune.server.secagg`), which differ only in how updates travel and are
summed: :func:`train_config` and :func:`build_messages` build what is sent,
:class:`TrainRound` records who was sampled, answered, failed or was rejected (and
why), the bytes each client moved and its train metrics, and applies a checked
aggregate; :func:`round_bytes` totals a round's bytes for ``history.json``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from logging import WARNING

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore import log

from rantune.federated.compression import settings_to_config
from rantune.federated.messages import (
    ARRAYS,
    BOOKKEEPING_METRICS,
    CONFIG,
    FREEZE,
    KEEP_LOCAL,
    check_update,
    state_to_record,
)
from rantune.federated.run_config import RunConfig
from rantune.server.nodes import NodeDirectory
from rantune.server.strategies.template import Payload, Rule, State, plain_metrics


def train_config(cfg: RunConfig, rule: Rule, server_round: int) -> dict:
    """The config every training message carries (the payload's keys go on top)."""
    config = {
        "server-round": server_round,
        "local-epochs": cfg.train.local_epochs,
        "batch-size": cfg.train.batch_size,
        "lr": cfg.train.lr,
        "weight-decay": cfg.train.weight_decay,
        "max-grad-norm": cfg.train.max_grad_norm,
        **settings_to_config(cfg.compression),
    }
    for key, pattern in ((KEEP_LOCAL, rule.keep_local), (FREEZE, rule.freeze)):
        if pattern:
            config[key] = str(pattern)
    return config


def build_messages(payloads: Mapping[int, Payload], config: Mapping, kind: str) -> list[Message]:
    """One message per node: its payload's arrays, the round's config + the payload's keys."""
    return [
        Message(
            content=RecordDict(
                {
                    ARRAYS: state_to_record(p.arrays),
                    CONFIG: ConfigRecord({**config, **p.config}),
                }
            ),
            message_type=kind,
            dst_node_id=node_id,
        )
        for node_id, p in payloads.items()
    ]


class TrainRound:
    """Bookkeeping of one training round: per-client entries (bytes, train metrics) and
    the sampled / answered / failed / rejected lists of ``history.json``."""

    def __init__(self, directory: NodeDirectory, server_round: int) -> None:
        self.directory = directory
        self.server_round = server_round
        self.clients: dict[str, dict] = {}
        self.failed: list[dict] = []
        self.rejected: list[dict] = []

    def failure(self, node_id: int, reason: str, down: int, up: int = 0) -> None:
        cid = self.directory.client_id(node_id)
        self.failed.append({"client": cid, "reason": reason})
        self.clients[cid] = {"bytes-down": down, "bytes-up": up}
        log(WARNING, "round %s: client %s failed: %s", self.server_round, cid, reason)

    def answer(self, node_id: int, metrics: Mapping | None, down: int, up: int) -> str:
        """Record a reply (learning the node's partition id); returns its client id."""
        self.directory.learn(node_id, metrics)
        cid = self.directory.client_id(node_id)
        entry = {"bytes-down": down, "bytes-up": up}
        if metrics is not None:
            entry["train"] = {
                k: v for k, v in plain_metrics(metrics).items() if k not in BOOKKEEPING_METRICS
            }
        self.clients[cid] = entry
        return cid

    def reject(self, cid: str, reason: str) -> None:
        self.rejected.append({"client": cid, "reason": reason})
        log(WARNING, "round %s: update of client %s rejected: %s", self.server_round, cid, reason)

    def info(self, sampled: Iterable[int], answered: Iterable[int]) -> dict:
        client_id = self.directory.client_id
        return {
            "sampled": sorted(client_id(n) for n in sampled),
            "answered": [client_id(n) for n in answered],
            "failed": self.failed,
            "rejected": self.rejected,
            "aggregated": False,
        }

    def skip(self, info: dict, reason: str) -> None:
        info["skipped"] = reason
        log(WARNING, "round %s: %s; the global model is kept", self.server_round, reason)

    def apply(self, info: dict, state: State, aggregate: Mapping[str, np.ndarray]) -> State:
        """``state`` updated by a checked aggregate (kept, with the reason, if it fails)."""
        new_state = dict(state)
        layout = {k: v.shape for k, v in state.items() if k in aggregate}
        reason = check_update(aggregate, layout)
        if reason is not None:
            self.skip(info, f"aggregate rejected: {reason}")
            return new_state
        new_state.update({k: np.asarray(v).astype(state[k].dtype) for k, v in aggregate.items()})
        info["aggregated"] = True
        return new_state


def round_bytes(clients: Mapping[str, dict], full_bytes: int) -> dict:
    """The round's byte totals and per-client means (``history.json`` ``rounds[i].bytes``)."""
    ups = [c["bytes-up"] for c in clients.values() if c.get("bytes-up")]
    downs = [c["bytes-down"] for c in clients.values() if "bytes-down" in c]
    return {
        "up": int(sum(ups)),
        "down": int(sum(downs)),
        "down-evaluate": int(sum(c.get("bytes-down-evaluate", 0) for c in clients.values())),
        "up-per-client": float(np.mean(ups)) if ups else 0.0,
        "down-per-client": float(np.mean(downs)) if downs else 0.0,
        "full-model-per-client": full_bytes,
        "up-ratio": (float(np.mean(ups)) / full_bytes) if ups else 0.0,
    }
