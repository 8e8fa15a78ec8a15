"""The server's round loop: a rule's plan and combine through any Flower ``Grid``.

Per round (the SuperLink's grid in ``flwr run``, the in-process one of
``simulations.engine``)::

    rule.plan(Round(round, "train", nodes, state), sampler) -> {node: Payload}   who, what
    grid.send_and_receive(messages) -> replies
    gate(replies) -> sound updates + failed/rejected(reason)             errors, NaN/Inf, keys, shapes
    rule.combine(round, updates, state) -> new global state              rantune.aggregation
    rule.plan(Round(round, "evaluate", ...), sampler) ; client-side evaluation summaries
    server-side evaluation, bytes, rundir.checkpoint(round)

and adds:

- client sampling by the loop's own samplers (:mod:`rantune.server.sampling`):
  seeded and reproducible without DP, Poisson from the OS CSPRNG with DP;
- byte accounting: ``count_bytes`` of every ArrayRecord sent and received, and the
  bytes full-model FedAvg would have moved;
- decoding of compressed updates and a gate that rejects, with a logged reason,
  replies with errors, NaN/Inf, wrong keys, shapes or dtypes; the round goes on
  when at least ``min-train-clients`` updates are sound;
- server-side evaluation on the global test set (with the rule's dense deltas
  folded in), client-side evaluation summaries (mean, worst client, per client,
  personalized where the rule keeps tensors local);
- a checkpoint and ``history.json`` after every round, and resume from the last
  committed round (see :mod:`rantune.federated.rundir`).

:class:`TrainRound` is the bookkeeping of one training round; the SecAgg+ runner
(:mod:`rantune.server.secagg`) reuses it with its own transport.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from logging import INFO, WARNING

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from rantune.errors import InputError
from rantune.federated import splits, workload
from rantune.federated.compression import decode_update, settings_from_config, settings_to_config
from rantune.federated.evaluation import GlobalEvaluator, summarize_clients
from rantune.federated.messages import (
    ARRAYS,
    BOOKKEEPING_METRICS,
    CONFIG,
    FREEZE,
    KEEP_LOCAL,
    LORA_RANK,
    METRICS,
    NUM_EXAMPLES,
    PARTITION_ID,
    PERSONALIZED,
    PERSONALIZED_PREFIX,
    check_update,
    expected_reply_keys,
    message_array_bytes,
    record_bytes,
    record_to_state,
    state_to_record,
    to_numpy,
)
from rantune.federated.run_config import RunConfig
from rantune.federated.rundir import RunDir
from rantune.server.replies import replies_by_node
from rantune.server.sampling import Sampler, evaluate_sampler, train_sampler
from rantune.server.strategies import template
from rantune.server.strategies.flower_adapter import as_rule
from rantune.server.strategies.hooks import evaluate_global, write_dense_deltas
from rantune.server.strategies.template import Combined, Node, Reply, Rule, State
from rantune.tasks import get_task


@dataclass
class _Sent:
    reference: dict[str, np.ndarray]
    compression: object
    down: int


def _first(records) -> object | None:
    values = list(records.values())
    return values[0] if len(values) == 1 else None


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


def _messages(
    payloads: Mapping[int, template.Payload], config: Mapping, kind: str
) -> list[Message]:
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

    def __init__(self, runner: RoundRunner, server_round: int) -> None:
        self.runner = runner
        self.server_round = server_round
        self.clients: dict[str, dict] = {}
        self.failed: list[dict] = []
        self.rejected: list[dict] = []

    def failure(self, node_id: int, reason: str, down: int, up: int = 0) -> None:
        cid = self.runner.client_id(node_id)
        self.failed.append({"client": cid, "reason": reason})
        self.clients[cid] = {"bytes-down": down, "bytes-up": up}
        log(WARNING, "round %s: client %s failed: %s", self.server_round, cid, reason)

    def answer(self, node_id: int, metrics: Mapping | None, down: int, up: int) -> str:
        """Record a reply (learning the node's partition id); returns its client id."""
        if metrics is not None and PARTITION_ID in metrics:
            self.runner.node_pid[node_id] = int(metrics[PARTITION_ID])
        cid = self.runner.client_id(node_id)
        entry = {"bytes-down": down, "bytes-up": up}
        if metrics is not None:
            entry["train"] = {
                k: v
                for k, v in template.plain_metrics(metrics).items()
                if k not in BOOKKEEPING_METRICS
            }
        self.clients[cid] = entry
        return cid

    def reject(self, cid: str, reason: str) -> None:
        self.rejected.append({"client": cid, "reason": reason})
        log(WARNING, "round %s: update of client %s rejected: %s", self.server_round, cid, reason)

    def info(self, sampled: Iterable[int], answered: Iterable[int]) -> dict:
        client_id = self.runner.client_id
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


class RoundRunner:
    """Runs rounds of one rule on one grid and keeps the run directory current.

    ``rule``: a :class:`Rule` (a bare Flower strategy is run as a FlowerRule).
    """

    def __init__(self, grid: Grid, cfg: RunConfig, rule: Rule | Strategy, out_dir=None) -> None:
        self.grid = grid
        self.cfg = cfg
        self.rule = as_rule(rule)
        self.task = get_task(cfg.task)
        self.rundir = RunDir(out_dir or cfg.out_dir)
        self.num_clients = splits.num_clients(cfg.data, cfg.partition)
        self.train_sampler = train_sampler(cfg, self.num_clients)
        self.evaluate_sampler = evaluate_sampler(cfg)
        self.node_pid: dict[int, int] = {}
        # node id -> LoRA rank, from query replies (not checkpointed: node ids may
        # change after a restart, so they are asked again).
        self.node_rank: dict[int, int] = {}

    def client_id(self, node_id: int) -> str:
        return str(self.node_pid[node_id]) if node_id in self.node_pid else f"node-{node_id}"

    # ------------------------------------------------------------------ nodes
    def connected(self, sampler: Sampler) -> list[int]:
        """The connected node ids, sorted, once as many as ``sampler`` needs are there."""
        waited = False
        while True:
            ids = sorted(self.grid.get_node_ids())
            need = sampler.needed(len(ids))
            if len(ids) >= need:
                return ids
            if not waited:
                log(INFO, "waiting for nodes to connect: %d connected, %d needed", len(ids), need)
                waited = True
            time.sleep(1.0)

    def _query(self, node_ids: list[int]) -> None:
        """Ask nodes without a known rank for their partition id and rank (``query``)."""
        unknown = [n for n in node_ids if n not in self.node_rank]
        if not unknown:
            return
        messages = [
            Message(
                content=RecordDict({CONFIG: ConfigRecord({})}),
                message_type=MessageType.QUERY,
                dst_node_id=n,
            )
            for n in unknown
        ]
        replies = self.grid.send_and_receive(messages, timeout=self.cfg.round_timeout)
        for node, reply in replies_by_node(messages, replies).items():
            if reply.has_error():
                log(WARNING, "node %s did not say its LoRA rank: %s", node, reply.error.reason)
                continue
            metrics = _first(reply.content.metric_records)
            if metrics is None or LORA_RANK not in metrics:
                log(WARNING, "node %s answered the rank query without %s", node, LORA_RANK)
                continue
            self.node_pid[node] = int(metrics[PARTITION_ID])
            self.node_rank[node] = int(metrics[LORA_RANK])
        missing = [n for n in node_ids if n not in self.node_rank]
        if missing:
            log(WARNING, "left out of this round (no rank known): nodes %s", missing)

    def nodes(self, sampler: Sampler) -> list[Node]:
        """The candidates of a round, sorted by node id (with ranks when the rule needs them)."""
        ids = self.connected(sampler)
        if self.rule.needs_ranks:
            self._query(ids)
            ids = [n for n in ids if n in self.node_rank]
        return [Node(n, self.node_pid.get(n), self.node_rank.get(n)) for n in ids]

    def _send(self, messages: list[Message]) -> dict[int, Message]:
        if not messages:
            return {}
        replies = self.grid.send_and_receive(messages, timeout=self.cfg.round_timeout)
        return replies_by_node(messages, replies)  # SuperLink errors included

    # ---------------------------------------------------------------- training
    def _train(self, server_round: int, global_state: State) -> tuple[State, dict, dict]:
        cfg, rule = self.cfg, self.rule
        nodes = self.nodes(self.train_sampler)
        rnd = template.Round(server_round, template.TRAIN, nodes, global_state)
        payloads = rule.plan(rnd, self.train_sampler)
        messages = _messages(payloads, train_config(cfg, rule, server_round), template.TRAIN)
        sent: dict[int, _Sent] = {}
        for message in messages:
            mconfig = _first(message.content.config_records) or {}
            arrays = record_to_state(message.content[ARRAYS])
            keys = expected_reply_keys(arrays, mconfig)
            sent[message.metadata.dst_node_id] = _Sent(
                {k: arrays[k] for k in keys},
                settings_from_config(mconfig),
                message_array_bytes(message.content),
            )
        by_node = self._send(messages)
        ledger = TrainRound(self, server_round)
        accepted: list[Reply] = []
        for node_id, info in sent.items():
            reply = by_node.get(node_id)
            if reply is None or reply.has_error():
                reason = "no reply within round-timeout" if reply is None else reply.error.reason
                ledger.failure(node_id, reason, info.down)
                continue
            metrics = _first(reply.content.metric_records)
            up = message_array_bytes(reply.content)
            cid = ledger.answer(node_id, metrics, info.down, up)
            reason, decoded = self._check_reply(reply, metrics, info)
            if reason is not None:
                ledger.reject(cid, reason)
                continue
            reply.content = RecordDict({ARRAYS: state_to_record(decoded), METRICS: metrics})
            client = int(metrics.get(PARTITION_ID, node_id))
            accepted.append(Reply(node_id, client, decoded, dict(metrics), reply))
        accepted.sort(key=lambda r: self.node_pid.get(r.node_id, r.node_id))
        info = ledger.info(sent, [r.node_id for r in accepted])
        minimum = max(1, cfg.sampling.min_train_clients)
        if len(accepted) < minimum:
            reason = f"{len(accepted)} sound update(s), fewer than min-train-clients={minimum}"
            ledger.skip(info, reason)
            extra = rule.round_skipped(server_round, len(sent))
            if extra:
                info["metrics"] = extra
            return dict(global_state), info, ledger.clients
        try:
            combined = rule.combine(server_round, accepted, global_state)
        except InputError as err:  # the rule refuses these updates (e.g. mixed ranks)
            ledger.skip(info, f"aggregation failed: {err}")
            return dict(global_state), info, ledger.clients
        return self._apply(ledger, info, global_state, combined), info, ledger.clients

    @staticmethod
    def _apply(ledger: TrainRound, info: dict, state: State, combined: Combined) -> State:
        if combined.metrics is not None:
            info["metrics"] = template.plain_metrics(combined.metrics)
        if combined.state is None:
            return dict(state)
        return ledger.apply(info, state, combined.state)

    @staticmethod
    def _check_reply(reply: Message, metrics, info: _Sent) -> tuple[str | None, dict | None]:
        if metrics is None:
            return "reply has no single MetricRecord", None
        examples = metrics.get(NUM_EXAMPLES)
        if isinstance(examples, list) or examples is None or not examples > 0:
            return f"reply metrics need {NUM_EXAMPLES} > 0 (got {examples!r})", None
        arrays = _first(reply.content.array_records)
        if arrays is None:
            return "reply has no single ArrayRecord", None
        try:
            decoded = decode_update(info.reference, arrays, info.compression)
        except (ValueError, TypeError) as err:
            return f"malformed update: {err}", None
        layout = {k: v.shape for k, v in info.reference.items()}
        return check_update(decoded, layout), decoded

    # -------------------------------------------------------------- evaluation
    def _evaluate(self, server_round: int, global_state: State) -> tuple[dict, dict]:
        rule = self.rule
        nodes = self.nodes(self.evaluate_sampler)
        rnd = template.Round(server_round, template.EVALUATE, nodes, global_state)
        payloads = rule.plan(rnd, self.evaluate_sampler)
        config = {"server-round": server_round, PERSONALIZED: rule.personalized}
        messages = _messages(payloads, config, template.EVALUATE)
        down = {m.metadata.dst_node_id: message_array_bytes(m.content) for m in messages}
        by_node = self._send(messages)
        per_client, failed, valid, clients = {}, [], [], {}
        for node_id in down:
            reply = by_node.get(node_id)
            metrics = (
                None if reply is None or reply.has_error() else _first(reply.content.metric_records)
            )
            if metrics is not None and PARTITION_ID in metrics:
                self.node_pid[node_id] = int(metrics[PARTITION_ID])
            cid = self.client_id(node_id)
            clients[cid] = {"bytes-down-evaluate": down[node_id]}
            if metrics is None or NUM_EXAMPLES not in metrics:
                if reply is None:
                    reason = "no reply within round-timeout"
                elif reply.has_error():
                    reason = reply.error.reason
                else:
                    reason = "reply has no single MetricRecord"
                failed.append({"client": cid, "reason": reason})
                log(
                    WARNING,
                    "round %s: evaluation on client %s failed: %s",
                    server_round,
                    cid,
                    reason,
                )
                continue
            per_client[cid] = {
                k: v
                for k, v in template.plain_metrics(metrics).items()
                if k not in BOOKKEEPING_METRICS
            }
            clients[cid]["evaluate"] = per_client[cid]
            valid.append(reply)
        summary = {
            "sampled": sorted(self.client_id(n) for n in down),
            "answered": sorted(per_client),
            "failed": failed,
            **self._summaries(per_client),
        }
        if valid:
            try:
                aggregated = rule.aggregate_evaluate(server_round, valid)
            except InputError as err:
                log(WARNING, "round %s: aggregate_evaluate failed: %s", server_round, err)
                aggregated = None
            if aggregated is not None:
                summary["aggregated"] = aggregated
        return summary, clients

    def _summaries(self, per_client: dict[str, dict]) -> dict:
        """Mean / worst / per-client summaries; ``personalized`` ones where clients sent any."""
        primary, higher = self.task.primary_metric, self.task.higher_is_better
        summary = summarize_clients(
            {
                c: {k: v for k, v in m.items() if not k.startswith(PERSONALIZED_PREFIX)}
                for c, m in per_client.items()
            },
            primary,
            higher,
        )
        personal = {
            c: {
                NUM_EXAMPLES: m[NUM_EXAMPLES],
                **{
                    k.removeprefix(PERSONALIZED_PREFIX): v
                    for k, v in m.items()
                    if k.startswith(PERSONALIZED_PREFIX)
                },
            }
            for c, m in per_client.items()
        }
        if any(len(m) > 1 for m in personal.values()):
            summary["personalized"] = summarize_clients(personal, primary, higher)
        return summary

    # -------------------------------------------------------------------- run
    def _check_nodes(self, num_clients: int) -> None:
        """One node per client: more nodes than clients is an error (their partition ids
        would be out of range); fewer is logged (deployment nodes may join later)."""
        num_nodes = len(list(self.grid.get_node_ids()))
        hint = (
            f"the run config partitions the data into {num_clients} clients (one per base "
            "station for partition.scheme=natural); start as many SuperNodes "
            f"(flwr run ... --federation-config 'num-supernodes={num_clients}') or set "
            "partition.num-clients"
        )
        if num_nodes > num_clients:
            raise InputError(f"{num_nodes} SuperNodes are connected but {hint}")
        if num_nodes < num_clients:
            log(WARNING, "%s SuperNode(s) connected so far, but %s", num_nodes, hint)

    def run(self) -> dict:
        """Run (or resume) every round; returns the history written to history.json."""
        cfg, rundir = self.cfg, self.rundir
        existing = rundir.check_config(cfg)
        self._check_nodes(self.num_clients)
        spec = workload.model_spec(cfg)
        evaluator = GlobalEvaluator(cfg)
        full_bytes = record_bytes(state_to_record(workload.full_model_parameters(spec)))
        resume = rundir.resume_point(cfg) if existing else None
        if not existing:
            rundir.write_config(cfg)
        history = {
            "config-hash": cfg.identity_hash(),
            "task": cfg.task,
            "strategy": cfg.strategy.name,
            "primary-metric": self.task.primary_metric,
            "higher-is-better": self.task.higher_is_better,
            "full-model-bytes": full_bytes,
            "num-clients": self.num_clients,
            "sampling": {
                "train": self.train_sampler.describe(),
                "evaluate": self.evaluate_sampler.describe(),
            },
            "rounds": [],
        }
        if resume is not None:
            global_state = {k: np.asarray(v) for k, v in resume.global_state.items()}
            self.rule.load_state_dict(resume.strategy_arrays, resume.strategy_meta)
            history["rounds"] = list(resume.rounds)
            start = resume.round + 1
            log(INFO, "resuming %s after round %s", rundir.root, resume.round)
        else:
            global_state = {k: to_numpy(v) for k, v in workload.initial_global_state(spec).items()}
            t0 = time.perf_counter()
            record = {"round": 0, "started-at": time.time(), "server": evaluator(global_state)}
            record["wall-time-s"] = time.perf_counter() - t0
            self._commit(0, global_state, record, history)
            start = 1
        history["adapter-bytes"] = record_bytes(state_to_record(global_state))
        for server_round in range(start, cfg.num_server_rounds + 1):
            log(INFO, "[ROUND %s/%s]", server_round, cfg.num_server_rounds)
            started, t0 = time.time(), time.perf_counter()
            global_state, train_info, clients = self._train(server_round, global_state)
            t_train = time.perf_counter()
            evaluation, eval_clients = self._evaluate(server_round, global_state)
            t_eval = time.perf_counter()
            server_metrics = evaluate_global(evaluator, self.rule, global_state)
            t_end = time.perf_counter()
            for cid, entry in eval_clients.items():
                clients.setdefault(cid, {}).update(entry)
            record = {
                "round": server_round,
                "started-at": started,
                "wall-time-s": t_end - t0,
                "phase-s": {
                    "train": t_train - t0,
                    "evaluate": t_eval - t_train,
                    "server-evaluate": t_end - t_eval,
                },
                "train": train_info,
                "evaluate": evaluation,
                "server": server_metrics,
                "clients": dict(sorted(clients.items())),
                "bytes": _round_bytes(clients, full_bytes),
            }
            log(
                INFO,
                "round %s: global %s = %.4f",
                server_round,
                self.task.primary_metric,
                server_metrics.get(self.task.primary_metric, float("nan")),
            )
            self._commit(server_round, global_state, record, history)
        rundir.write_adapter(global_state, {"config-hash": cfg.identity_hash(), "task": cfg.task})
        write_dense_deltas(rundir.root, self.rule)
        history["final"] = history["rounds"][-1]["server"] if history["rounds"] else {}
        rundir.write_history(history)
        return history

    def _commit(self, server_round: int, state: State, record: dict, history: dict) -> None:
        arrays, meta = self.rule.state_dict()
        self.rundir.save_round(self.cfg, server_round, state, record, arrays, meta)
        history["rounds"].append(record)
        self.rundir.write_history(history)


def _round_bytes(clients: Mapping[str, dict], full_bytes: int) -> dict:
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


def run_server(grid: Grid, cfg: RunConfig, rule: Rule | Strategy, out_dir=None) -> dict:
    """Run (or resume) a federated run; returns its history (also in OUT/history.json)."""
    return RoundRunner(grid, cfg, rule, out_dir).run()
