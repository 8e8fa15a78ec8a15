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

The round's bookkeeping is :mod:`rantune.server.ledger` (shared with the SecAgg+
runner, :mod:`rantune.server.secagg`); the nodes' partition ids and ranks are
:mod:`rantune.server.nodes`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from logging import INFO, WARNING

import numpy as np
from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from rantune.errors import InputError
from rantune.federated import splits, workload
from rantune.federated.compression import decode_update, settings_from_config
from rantune.federated.evaluation import GlobalEvaluator, summarize_clients
from rantune.federated.messages import (
    ARRAYS,
    BOOKKEEPING_METRICS,
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
from rantune.server.ledger import TrainRound, build_messages, round_bytes, train_config
from rantune.server.nodes import NodeDirectory, single
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
        self.directory = NodeDirectory(grid, cfg.round_timeout)

    def client_id(self, node_id: int) -> str:
        return self.directory.client_id(node_id)

    def nodes(self, sampler: Sampler) -> list[Node]:
        """The candidates of a round, sorted by node id (with ranks when the rule needs them)."""
        return self.directory.nodes(sampler, self.rule.needs_ranks)

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
        messages = build_messages(payloads, train_config(cfg, rule, server_round), template.TRAIN)
        sent: dict[int, _Sent] = {}
        for message in messages:
            mconfig = single(message.content.config_records) or {}
            arrays = record_to_state(message.content[ARRAYS])
            keys = expected_reply_keys(arrays, mconfig)
            sent[message.metadata.dst_node_id] = _Sent(
                {k: arrays[k] for k in keys},
                settings_from_config(mconfig),
                message_array_bytes(message.content),
            )
        by_node = self._send(messages)
        ledger = TrainRound(self.directory, server_round)
        accepted: list[Reply] = []
        for node_id, info in sent.items():
            reply = by_node.get(node_id)
            if reply is None or reply.has_error():
                reason = "no reply within round-timeout" if reply is None else reply.error.reason
                ledger.failure(node_id, reason, info.down)
                continue
            metrics = single(reply.content.metric_records)
            up = message_array_bytes(reply.content)
            cid = ledger.answer(node_id, metrics, info.down, up)
            reason, decoded = self._check_reply(reply, metrics, info)
            if reason is not None:
                ledger.reject(cid, reason)
                continue
            reply.content = RecordDict({ARRAYS: state_to_record(decoded), METRICS: metrics})
            client = int(metrics.get(PARTITION_ID, node_id))
            accepted.append(Reply(node_id, client, decoded, dict(metrics), reply))
        accepted.sort(key=lambda r: self.directory.partition.get(r.node_id, r.node_id))
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
        arrays = single(reply.content.array_records)
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
        messages = build_messages(payloads, config, template.EVALUATE)
        down = {m.metadata.dst_node_id: message_array_bytes(m.content) for m in messages}
        by_node = self._send(messages)
        per_client, failed, valid, clients = {}, [], [], {}
        for node_id in down:
            reply = by_node.get(node_id)
            metrics = (
                None if reply is None or reply.has_error() else single(reply.content.metric_records)
            )
            self.directory.learn(node_id, metrics)
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
                "bytes": round_bytes(clients, full_bytes),
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


def run_server(grid: Grid, cfg: RunConfig, rule: Rule | Strategy, out_dir=None) -> dict:
    """Run (or resume) a federated run; returns its history (also in OUT/history.json)."""
    return RoundRunner(grid, cfg, rule, out_dir).run()
