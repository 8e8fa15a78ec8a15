"""The server's round loop: Flower's ``Strategy.start`` plus what rantune needs.

Per round it calls the strategy's own ``configure_train`` / ``aggregate_train`` /
``configure_evaluate`` / ``aggregate_evaluate`` through any Flower ``Grid`` (the
SuperLink's in ``flwr run``, the in-process one of ``simulations.engine``), and adds:

- seeded client sampling (Python's ``random`` reseeded from (seed, round));
- byte accounting: ``count_bytes`` of every ArrayRecord sent and received, and the
  bytes full-model FedAvg would have moved;
- decoding of compressed updates and a gate that rejects, with a logged reason,
  replies with errors, NaN/Inf, wrong keys, shapes or dtypes; the round goes on
  when at least ``min-train-clients`` updates are sound;
- server-side evaluation on the global test set, client-side evaluation summaries
  (mean, worst client, per client, personalized where the strategy keeps local
  parameters);
- a checkpoint and ``history.json`` after every round, and resume from the last
  committed round (see :mod:`rantune.federated.rundir`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from logging import INFO, WARNING

import numpy as np
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
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
    FREEZE,
    KEEP_LOCAL,
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
from rantune.seeding import derive_seed
from rantune.server.replies import replies_by_node
from rantune.server.strategies.hooks import evaluate_global, write_dense_deltas
from rantune.server.strategies.state import load_strategy_state, strategy_state
from rantune.tasks import get_task


class OrderedGrid(Grid):
    """Delegates to a Grid and lists node ids sorted, so seeded sampling is repeatable."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    def set_run(self, run) -> None:
        self._grid.set_run(run)

    @property
    def run(self):
        return self._grid.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return sorted(self._grid.get_node_ids())

    def push_messages(self, messages):
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids):
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages, *, timeout=None):
        return self._grid.send_and_receive(messages, timeout=timeout)


@dataclass
class _Sent:
    reference: dict[str, np.ndarray]
    compression: object
    down: int


def _first(records) -> object | None:
    values = list(records.values())
    return values[0] if len(values) == 1 else None


def _client_id(node_id: int, node_pid: dict[int, int]) -> str:
    return str(node_pid[node_id]) if node_id in node_pid else f"node-{node_id}"


def _train_config(cfg: RunConfig, strategy: Strategy) -> dict:
    config = {
        "local-epochs": cfg.train.local_epochs,
        "batch-size": cfg.train.batch_size,
        "lr": cfg.train.lr,
        "weight-decay": cfg.train.weight_decay,
        "max-grad-norm": cfg.train.max_grad_norm,
        **settings_to_config(cfg.compression),
    }
    for key, attr in ((KEEP_LOCAL, "keep_local_pattern"), (FREEZE, "freeze_pattern")):
        pattern = getattr(strategy, attr, None)
        if pattern:
            config[key] = str(pattern)
    return config


def _plain(metrics: MetricRecord | dict) -> dict:
    return {k: (v if isinstance(v, int | float) else list(v)) for k, v in dict(metrics).items()}


class RoundRunner:
    """Runs rounds of one strategy on one grid and keeps the run directory current."""

    def __init__(self, grid: Grid, cfg: RunConfig, strategy: Strategy, out_dir=None) -> None:
        self.grid = OrderedGrid(grid)
        self.cfg = cfg
        self.strategy = strategy
        self.task = get_task(cfg.task)
        self.rundir = RunDir(out_dir or cfg.out_dir)
        self.node_pid: dict[int, int] = {}

    # ---------------------------------------------------------------- training
    def _train(
        self, server_round: int, global_state: dict[str, np.ndarray]
    ) -> tuple[dict, dict, dict]:
        cfg = self.cfg
        random.seed(derive_seed(cfg.seed, "sample-train", server_round))
        config = ConfigRecord(_train_config(cfg, self.strategy))
        messages = list(
            self.strategy.configure_train(
                server_round, state_to_record(global_state), config, self.grid
            )
        )
        sent: dict[int, _Sent] = {}
        for message in messages:
            arrays = _first(message.content.array_records)
            mconfig = _first(message.content.config_records) or {}
            sent_state = record_to_state(arrays) if arrays is not None else {}
            keys = expected_reply_keys(sent_state, mconfig)
            sent[message.metadata.dst_node_id] = _Sent(
                {k: sent_state[k] for k in keys},
                settings_from_config(mconfig),
                message_array_bytes(message.content),
            )
        replies = (
            list(self.grid.send_and_receive(messages, timeout=cfg.round_timeout))
            if messages
            else []
        )
        by_node = replies_by_node(messages, replies)  # SuperLink errors included
        accepted: list[tuple[int, Message]] = []
        failed, rejected, clients = [], [], {}
        for node_id, info in sent.items():
            reply = by_node.get(node_id)
            entry = {"bytes-down": info.down, "bytes-up": 0}
            if reply is None or reply.has_error():
                reason = "no reply within round-timeout" if reply is None else reply.error.reason
                failed.append({"client": _client_id(node_id, self.node_pid), "reason": reason})
                log(
                    WARNING,
                    "round %s: client %s failed: %s",
                    server_round,
                    _client_id(node_id, self.node_pid),
                    reason,
                )
                clients[_client_id(node_id, self.node_pid)] = entry
                continue
            entry["bytes-up"] = message_array_bytes(reply.content)
            metrics = _first(reply.content.metric_records)
            if metrics is not None and PARTITION_ID in metrics:
                self.node_pid[node_id] = int(metrics[PARTITION_ID])
            cid = _client_id(node_id, self.node_pid)
            reason, decoded = self._check_reply(reply, metrics, info)
            if metrics is not None:
                entry["train"] = {
                    k: v for k, v in _plain(metrics).items() if k not in BOOKKEEPING_METRICS
                }
            clients[cid] = entry
            if reason is not None:
                rejected.append({"client": cid, "reason": reason})
                log(
                    WARNING, "round %s: update of client %s rejected: %s", server_round, cid, reason
                )
                continue
            reply.content = RecordDict({ARRAYS: state_to_record(decoded), METRICS: metrics})
            accepted.append((self.node_pid.get(node_id, node_id), reply))
        accepted.sort(key=lambda item: item[0])
        info = {
            "sampled": sorted(_client_id(n, self.node_pid) for n in sent),
            "answered": [_client_id(m.metadata.src_node_id, self.node_pid) for _, m in accepted],
            "failed": failed,
            "rejected": rejected,
            "aggregated": False,
        }
        new_state = dict(global_state)
        minimum = max(1, cfg.sampling.min_train_clients)
        if len(accepted) < minimum:
            info["skipped"] = (
                f"{len(accepted)} sound update(s), fewer than min-train-clients={minimum}"
            )
            log(WARNING, "round %s: %s; the global model is kept", server_round, info["skipped"])
            return new_state, info, clients
        try:
            agg_arrays, agg_metrics = self.strategy.aggregate_train(
                server_round, [m for _, m in accepted]
            )
        except Exception as err:  # noqa: BLE001 - a strategy failure must not end the run
            info["skipped"] = f"aggregation failed: {type(err).__name__}: {err}"
            log(WARNING, "round %s: %s", server_round, info["skipped"])
            return new_state, info, clients
        if agg_metrics is not None:
            info["metrics"] = _plain(agg_metrics)
        if agg_arrays is not None:
            aggregate = record_to_state(agg_arrays)
            layout = {k: v.shape for k, v in global_state.items() if k in aggregate}
            reason = check_update(aggregate, layout)
            if reason is None:
                new_state.update({k: v.astype(global_state[k].dtype) for k, v in aggregate.items()})
                info["aggregated"] = True
            else:
                info["skipped"] = f"aggregate rejected: {reason}"
                log(
                    WARNING, "round %s: %s; the global model is kept", server_round, info["skipped"]
                )
        return new_state, info, clients

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
    def _evaluate(
        self, server_round: int, global_state: dict[str, np.ndarray]
    ) -> tuple[dict, dict]:
        cfg = self.cfg
        random.seed(derive_seed(cfg.seed, "sample-evaluate", server_round))
        config = ConfigRecord(
            {PERSONALIZED: bool(getattr(self.strategy, "keep_local_pattern", None))}
        )
        messages = list(
            self.strategy.configure_evaluate(
                server_round, state_to_record(global_state), config, self.grid
            )
        )
        down = {m.metadata.dst_node_id: message_array_bytes(m.content) for m in messages}
        replies = (
            list(self.grid.send_and_receive(messages, timeout=cfg.round_timeout))
            if messages
            else []
        )
        by_node = replies_by_node(messages, replies)  # SuperLink errors included
        per_client, failed, valid, clients = {}, [], [], {}
        for node_id in down:
            reply = by_node.get(node_id)
            metrics = (
                None if reply is None or reply.has_error() else _first(reply.content.metric_records)
            )
            if metrics is not None and PARTITION_ID in metrics:
                self.node_pid[node_id] = int(metrics[PARTITION_ID])
            cid = _client_id(node_id, self.node_pid)
            clients[cid] = {"bytes-down-evaluate": down[node_id]}
            if metrics is None or NUM_EXAMPLES not in metrics:
                reason = (
                    "no reply within round-timeout"
                    if reply is None
                    else (
                        reply.error.reason
                        if reply.has_error()
                        else "reply has no single MetricRecord"
                    )
                )
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
                k: v for k, v in _plain(metrics).items() if k not in BOOKKEEPING_METRICS
            }
            clients[cid]["evaluate"] = per_client[cid]
            valid.append(reply)
        primary = self.task.primary_metric
        summary = {
            "sampled": sorted(_client_id(n, self.node_pid) for n in down),
            "answered": sorted(per_client),
            "failed": failed,
            **summarize_clients(
                {
                    c: {k: v for k, v in m.items() if not k.startswith(PERSONALIZED_PREFIX)}
                    for c, m in per_client.items()
                },
                primary,
                self.task.higher_is_better,
            ),
        }
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
            summary["personalized"] = summarize_clients(
                personal, primary, self.task.higher_is_better
            )
        if valid:
            try:
                aggregated = self.strategy.aggregate_evaluate(server_round, valid)
                if aggregated is not None:
                    summary["aggregated"] = _plain(aggregated)
            except Exception as err:  # noqa: BLE001
                log(WARNING, "round %s: aggregate_evaluate failed: %s", server_round, err)
        return summary, clients

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
        num_clients = splits.num_clients(cfg.data, cfg.partition)
        self._check_nodes(num_clients)
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
            "num-clients": num_clients,
            "rounds": [],
        }
        if resume is not None:
            global_state = {k: np.asarray(v) for k, v in resume.global_state.items()}
            load_strategy_state(self.strategy, resume.strategy_arrays, resume.strategy_meta)
            history["rounds"] = list(resume.rounds)
            start = resume.round + 1
            log(INFO, "resuming %s after round %s", rundir.root, resume.round)
        else:
            global_state = {k: to_numpy(v) for k, v in workload.initial_global_state(spec).items()}
            t0 = time.perf_counter()
            record = {"round": 0, "started-at": time.time(), "server": evaluator(global_state)}
            record["wall-time-s"] = time.perf_counter() - t0
            history["adapter-bytes"] = record_bytes(state_to_record(global_state))
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
            server_metrics = evaluate_global(evaluator, self.strategy, global_state)
            t_end = time.perf_counter()
            for cid, entry in eval_clients.items():
                clients.setdefault(cid, {}).update(entry)
            ups = [c["bytes-up"] for c in clients.values() if c.get("bytes-up")]
            downs = [c["bytes-down"] for c in clients.values() if "bytes-down" in c]
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
                "bytes": {
                    "up": int(sum(ups)),
                    "down": int(sum(downs)),
                    "down-evaluate": int(
                        sum(c.get("bytes-down-evaluate", 0) for c in clients.values())
                    ),
                    "up-per-client": float(np.mean(ups)) if ups else 0.0,
                    "down-per-client": float(np.mean(downs)) if downs else 0.0,
                    "full-model-per-client": full_bytes,
                    "up-ratio": (float(np.mean(ups)) / full_bytes) if ups else 0.0,
                },
            }
            primary = self.task.primary_metric
            log(
                INFO,
                "round %s: global %s = %.4f",
                server_round,
                primary,
                server_metrics.get(primary, float("nan")),
            )
            self._commit(server_round, global_state, record, history)
        rundir.write_adapter(global_state, {"config-hash": cfg.identity_hash(), "task": cfg.task})
        write_dense_deltas(rundir.root, self.strategy)
        history["final"] = history["rounds"][-1]["server"] if history["rounds"] else {}
        rundir.write_history(history)
        return history

    def _commit(self, server_round: int, state: dict, record: dict, history: dict) -> None:
        arrays, meta = strategy_state(self.strategy)
        self.rundir.save_round(self.cfg, server_round, state, record, arrays, meta)
        history["rounds"].append(record)
        self.rundir.write_history(history)


def run_server(grid: Grid, cfg: RunConfig, strategy: Strategy, out_dir=None) -> dict:
    """Run (or resume) a federated run; returns its history (also in OUT/history.json)."""
    return RoundRunner(grid, cfg, strategy, out_dir).run()
