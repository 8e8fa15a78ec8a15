"""Flower ClientApp of rantune: one base station (``clientapp = "rantune.client.app:app"``).

A thin adapter over :mod:`rantune.federated.local`: the node config's
``partition-id`` / ``num-partitions`` pick the base station's data (loaded from the
channel cache once per process), an optional ``lora-r`` sets its LoRA rank (else the
run config's ``lora.client-ranks`` schedule or ``lora.r``). A ``query`` message returns
the node's partition id and rank (asked by rank-aware strategies).
"""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from rantune.client.secagg import default_mods
from rantune.errors import InputError
from rantune.federated.local import local_evaluate, local_train, node_identity
from rantune.federated.messages import ARRAYS, CONFIG, LORA_RANK, METRICS, PARTITION_ID
from rantune.federated.run_config import RunConfig, parse_run_config

_PARSED: dict[tuple, RunConfig] = {}


def run_config_of(context: Context) -> RunConfig:
    """``context.run_config`` parsed once per process."""
    key = tuple(sorted(context.run_config.items()))
    if key not in _PARSED:
        _PARSED[key] = parse_run_config(context.run_config)
    return _PARSED[key]


def _unpack(message: Message):
    content = message.content
    if ARRAYS not in content.array_records:
        raise InputError(f"message has no '{ARRAYS}' ArrayRecord")
    config = content.config_records.get(CONFIG)
    return content.array_records[ARRAYS], dict(config) if config is not None else {}


def build_client_app(mods: list | None = None) -> ClientApp:
    """A rantune ClientApp, optionally with Flower mods (DP clipping, SecAgg+, ...)."""
    app = ClientApp(mods=mods)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        cfg = run_config_of(context)
        node = node_identity(cfg, context.node_config)
        arrays, config = _unpack(message)
        record, metrics = local_train(cfg, node, arrays, config, context.state)
        content = RecordDict({ARRAYS: record, METRICS: MetricRecord(metrics)})
        return Message(content, reply_to=message)

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        cfg = run_config_of(context)
        node = node_identity(cfg, context.node_config)
        arrays, config = _unpack(message)
        metrics = local_evaluate(cfg, node, arrays, config, context.state)
        return Message(RecordDict({METRICS: MetricRecord(metrics)}), reply_to=message)

    @app.query()
    def query(message: Message, context: Context) -> Message:
        """Who this node is (rank-aware strategies ask before sending rank-shaped adapters)."""
        cfg = run_config_of(context)
        node = node_identity(cfg, context.node_config)
        metrics = MetricRecord({PARTITION_ID: node.partition_id, LORA_RANK: node.rank})
        return Message(RecordDict({METRICS: metrics}), reply_to=message)

    return app


# SecAgg+ and DP-clipping mods: inert unless the run config enables them (client/secagg.py).
app = build_client_app(mods=default_mods())
