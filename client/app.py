"""Flower ClientApp of rantune: one base station (``clientapp = "rantune.client.app:app"``).

A thin adapter over :class:`rantune.federated.local.LocalJob`: the node config's
``partition-id`` / ``num-partitions`` pick the base station, an optional ``lora-r``
sets its LoRA rank (else the run config's ``lora.client-ranks`` schedule or
``lora.r``); the node's job (its rows, its model) is built on its first message and
kept between rounds (:mod:`rantune.client.jobs`). A ``query`` message returns the
node's partition id and rank (asked by rank-aware strategies) without loading data.
"""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from rantune.client.jobs import JOBS, JobRegistry
from rantune.client.secagg import default_mods
from rantune.errors import InputError
from rantune.federated.messages import ARRAYS, CONFIG, LORA_RANK, METRICS, PARTITION_ID


def _unpack(message: Message):
    content = message.content
    if ARRAYS not in content.array_records:
        raise InputError(f"message has no '{ARRAYS}' ArrayRecord")
    config = content.config_records.get(CONFIG)
    return content.array_records[ARRAYS], dict(config) if config is not None else {}


def build_client_app(mods: list | None = None, jobs: JobRegistry = JOBS) -> ClientApp:
    """A rantune ClientApp, optionally with Flower mods (DP clipping, SecAgg+, ...).

    ``jobs``: where the node's :class:`~rantune.federated.local.LocalJob` is kept
    between rounds (the process's shared registry by default).
    """
    app = ClientApp(mods=mods)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        arrays, config = _unpack(message)
        record, metrics = jobs.job(context).train(arrays, config, context.state)
        content = RecordDict({ARRAYS: record, METRICS: MetricRecord(metrics)})
        return Message(content, reply_to=message)

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        arrays, config = _unpack(message)
        metrics = jobs.job(context).evaluate(arrays, config, context.state)
        return Message(RecordDict({METRICS: MetricRecord(metrics)}), reply_to=message)

    @app.query()
    def query(message: Message, context: Context) -> Message:
        """Who this node is (rank-aware strategies ask before sending rank-shaped adapters)."""
        node = jobs.node(context)
        metrics = MetricRecord({PARTITION_ID: node.partition_id, LORA_RANK: node.rank})
        return Message(RecordDict({METRICS: metrics}), reply_to=message)

    return app


# SecAgg+ and DP-clipping mods: inert unless the run config enables them (client/secagg.py).
app = build_client_app(mods=default_mods())
