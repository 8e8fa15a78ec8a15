"""SecAgg+ training rounds for the rantune ServerApp (``secagg.enabled = true``).

Flower 1.41 has SecAgg+ only in its legacy workflow: ``SecAggPlusWorkflow`` drives
one training round through a ``LegacyContext`` (legacy strategy, client manager)
and four message exchanges with every sampled node (setup, share keys, collect
masked vectors, unmask); the client side is ``secaggplus_mod`` (``client/secagg.py``).
The server learns only the weighted *sum* of the quantized parameters.

:class:`SecAggRoundRunner` is the normal round loop (:class:`server.loop.RoundRunner`:
sampling, evaluation, history.json, checkpoints, resume, and the training round's
bookkeeping :class:`server.ledger.TrainRound`) with the training transport and
aggregation replaced by one SecAgg+ round per server round: the loop's sampler picks
the clients (the legacy client manager hands exactly those to the workflow). Per round ``history.json`` records, under
``train``: sampled/answered/failed base stations (a node that drops out is
reported with the stage it was lost in; SecAgg+ recovers its masks if enough
shares arrive), the train metrics the clients report in clear (loss,
num-examples: not protected), and ``secagg``: shares, threshold, quantization
step and error bound, and bytes/seconds per protocol stage. Per-client
``bytes-up``/``bytes-down`` count every record of every stage (keys, shares,
masked vectors), not only arrays.

What SecAgg+ excludes (the server never sees one client's update): per-client
validation and rejection of updates, robust aggregation (median, Krum, trimmed
mean), LoRA-aware per-client rules (FLoRA stacking, HetLoRA, FedSA/FFA keep-local
or freeze patterns), update compression, and (here) DP wrappers. Only plain
weighted averaging (fedavg, fedprox) runs under it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from flwr.app import ConfigRecord, Context, MetricRecord, RecordDict
from flwr.common import FitRes, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.server_config import ServerConfig
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from rantune.federated.messages import METRICS, NUM_EXAMPLES
from rantune.federated.privacy import KEYS_HASH, SecAggSettings, keys_hash
from rantune.federated.run_config import RunConfig
from rantune.federated.splits import FederatedData
from rantune.server.ledger import TrainRound, train_config
from rantune.server.loop import RoundRunner
from rantune.server.privacy import check_plain_averaging
from rantune.server.secagg_metering import MeteringGrid
from rantune.server.strategies.flower_adapter import FlowerRule, round_payload
from rantune.server.strategies.template import TRAIN, State, aggregate_metrics

STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")


class _RecordingFedAvg(LegacyFedAvg):
    """The legacy strategy SecAggPlusWorkflow calls: samples, and records what it saw.

    ``aggregate_fit`` receives results whose parameters the workflow has already
    replaced by the securely aggregated weighted mean; it returns them unchanged.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fit_config: dict = {}
        self.reset({})

    def reset(self, fit_config: dict) -> None:
        self.fit_config = dict(fit_config)
        self.sampled: list[int] = []
        self.results: list[tuple[GridClientProxy, FitRes]] = []
        self.failures: list = []
        self.aggregated: Parameters | None = None

    def configure_fit(self, server_round, parameters, client_manager):
        pairs = super().configure_fit(server_round, parameters, client_manager)
        self.sampled = [proxy.node_id for proxy, _ in pairs]
        return pairs

    def aggregate_fit(self, server_round, results, failures):
        self.results, self.failures = list(results), list(failures)
        if not self.results:
            return None, {}
        self.aggregated = self.results[0][1].parameters
        return self.aggregated, {}


class _ChosenClients(SimpleClientManager):
    """The legacy client manager, sampling exactly the clients the round loop chose."""

    def __init__(self) -> None:
        super().__init__()
        self.chosen: list[str] = []

    def sample(self, num_clients: int, min_num_clients=None, criterion=None):
        return [self.clients[cid] for cid in self.chosen if cid in self.clients]


def max_client_weight(cfg: RunConfig) -> float:
    """Largest number of training rows of any client: the weights never exceed it."""
    data = FederatedData.load(cfg.data, cfg.partition)
    return float(max(len(data.rows(i, "train")) for i in range(data.num_clients)))


def resolved_shares(settings: SecAggSettings, num_sampled: int) -> tuple[int, int]:
    """``(num_shares, threshold)`` as SecAggPlusWorkflow derives them for ``num_sampled``."""
    if isinstance(settings.num_shares, float):
        shares = round(settings.num_shares * num_sampled)
        if shares < num_sampled and shares % 2 == 0:
            shares += 1
        if shares <= 2:
            shares = num_sampled
    else:
        shares = settings.num_shares
    if isinstance(settings.reconstruction_threshold, float):
        threshold = max(round(settings.reconstruction_threshold * shares), 2)
    else:
        threshold = settings.reconstruction_threshold
    return shares, threshold


class SecAggRoundRunner(RoundRunner):
    """The rantune round loop with SecAgg+ training rounds (see the module docstring)."""

    def __init__(
        self,
        grid: Grid,
        cfg: RunConfig,
        rule: FlowerRule,
        settings: SecAggSettings,
        out_dir=None,
    ) -> None:
        self.meter = MeteringGrid(grid)
        super().__init__(self.meter, cfg, rule, out_dir)
        self.settings = settings
        self.max_weight = settings.max_weight or max_client_weight(cfg)
        self.workflow = SecAggPlusWorkflow(
            settings.num_shares,
            settings.reconstruction_threshold,
            max_weight=self.max_weight,
            clipping_range=settings.clipping_range,
            quantization_range=settings.quantization_range,
            timeout=cfg.round_timeout,
        )
        s = cfg.sampling
        self.legacy = _RecordingFedAvg(
            fraction_fit=s.fraction_train,
            fraction_evaluate=0.0,
            min_fit_clients=max(2, s.min_train_clients),
            min_evaluate_clients=0,
            min_available_clients=max(2, s.min_available_clients),
            on_fit_config_fn=lambda _round: dict(self.legacy.fit_config),
            accept_failures=True,
        )
        self.client_manager = _ChosenClients()
        self._proxies: dict[int, GridClientProxy] = {}

    # ---------------------------------------------------------------- nodes
    def _sync_nodes(self, node_ids: Sequence[int], chosen: Sequence[int]) -> None:
        """Register the connected nodes with the legacy client manager; ``chosen`` are the
        ones it hands to the workflow."""
        current = set(node_ids)
        for node_id in [n for n in self._proxies if n not in current]:
            self.client_manager.unregister(self._proxies.pop(node_id))
        for node_id in sorted(current - set(self._proxies)):
            proxy = GridClientProxy(node_id=node_id, grid=self.grid, run_id=self.grid.run.run_id)
            self.client_manager.register(proxy)
            self._proxies[node_id] = proxy
        self.client_manager.chosen = [str(n) for n in chosen]

    def _context(self, server_round: int, arrays: list[np.ndarray]) -> LegacyContext:
        base = Context(
            run_id=self.grid.run.run_id,
            node_id=SUPERLINK_NODE_ID,
            node_config={},
            state=RecordDict(),
            run_config=dict(self.cfg.flat_dict()),
        )
        context = LegacyContext(
            base,
            config=ServerConfig(num_rounds=self.cfg.num_server_rounds),
            strategy=self.legacy,
            client_manager=self.client_manager,
        )
        context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
            ndarrays_to_parameters(arrays), keep_input=True
        )
        context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
            {WorkflowKey.CURRENT_ROUND: server_round, WorkflowKey.START_TIME: time.time()}
        )
        return context

    def _fit_config(self, server_round: int, node_ids: Sequence[int], state: State) -> dict:
        """The round's train config, the Flower strategy's own keys (FedProx's
        ``proximal-mu``) and the hash of the tensor names."""
        payload = round_payload(self.rule.strategy, server_round, TRAIN, node_ids, state)
        config = {**train_config(self.cfg, self.rule, server_round), **payload.config}
        config[KEYS_HASH] = keys_hash(sorted(state))
        return config

    # ---------------------------------------------------------------- train
    def _train(self, server_round: int, global_state: State) -> tuple[State, dict, dict]:
        cfg = self.cfg
        keys = sorted(global_state)
        nodes = self.nodes(self.train_sampler)
        chosen = [n.node_id for n in self.train_sampler.draw(server_round, nodes)]
        node_ids = [n.node_id for n in nodes]
        self._sync_nodes(node_ids, chosen)
        self.legacy.reset(self._fit_config(server_round, node_ids, global_state))
        context = self._context(server_round, [np.asarray(global_state[k]) for k in keys])
        self.meter.reset()
        self.workflow(self.grid, context)

        results = {proxy.node_id: fitres for proxy, fitres in self.legacy.results}
        ledger = TrainRound(self.directory, server_round)
        records = []
        for node_id in self.legacy.sampled:
            down, up = int(self.meter.down[node_id]), int(self.meter.up[node_id])
            fitres = results.get(node_id)
            if fitres is None:
                reason = self.meter.errors.get(node_id, "left the SecAgg+ protocol")
                ledger.failure(node_id, reason, down, up)
                continue
            metrics = {**dict(fitres.metrics), NUM_EXAMPLES: int(fitres.num_examples)}
            ledger.answer(node_id, metrics, down, up)
            records.append(RecordDict({METRICS: MetricRecord(metrics)}))
        info = ledger.info(self.legacy.sampled, sorted(results, key=self.client_id))
        weights = [float(f.num_examples) / self.max_weight for f in results.values()]
        shares, threshold = resolved_shares(self.settings, len(self.legacy.sampled))
        info["secagg"] = {
            "num-shares": shares,
            "reconstruction-threshold": threshold,
            "clipping-range": self.settings.clipping_range,
            "quantization-range": self.settings.quantization_range,
            "max-weight": self.max_weight,
            "quantization-step": self.settings.step(),
            "error-bound": quantization_error_bound(self.settings, weights),
            "stages": {k: dict(v) for k, v in self.meter.stages.items()},
        }
        minimum = max(2, cfg.sampling.min_train_clients)
        if self.legacy.aggregated is None or len(results) < minimum:
            ledger.skip(
                info,
                f"SecAgg+ round produced no aggregate ({len(results)} masked update(s), "
                f"need >= {minimum} and enough shares)",
            )
            return dict(global_state), info, ledger.clients
        if records:
            info["metrics"] = dict(aggregate_metrics(records, NUM_EXAMPLES))
        arrays = parameters_to_ndarrays(self.legacy.aggregated)
        aggregate = dict(zip(keys, arrays, strict=True)) if len(arrays) == len(keys) else {}
        return ledger.apply(info, global_state, aggregate), info, ledger.clients


def quantization_error_bound(settings: SecAggSettings, weights: list[float]) -> float:
    """Largest possible |SecAgg+ mean - exact weighted mean| per parameter.

    Each client quantizes ``w_i x_i`` (``w_i = num-examples / max-weight <= 1``)
    with stochastic rounding (error < one step ``2 r / Q``), and its weight to a
    multiple of ``1 / Q`` (error < ``1 / (2 Q)``, worth at most half a step on
    ``|x| <= r``); the sum is divided by ``sum w_i``: ``1.5 n (2 r / Q) / sum w_i``.
    Parameters outside ``[-r, r]`` are clipped (not covered by the bound).
    """
    if not weights or sum(weights) <= 0:
        return float("inf")
    return 1.5 * len(weights) * settings.step() / sum(weights)


def run_secagg_server(grid: Grid, cfg: RunConfig, rule: FlowerRule, out_dir=None) -> dict:
    """Run (or resume) a federated run whose training rounds use SecAgg+."""
    check_plain_averaging(rule, cfg.strategy.name, "secagg.enabled")
    return SecAggRoundRunner(grid, cfg, rule, cfg.secagg, out_dir).run()


def secagg_enabled(cfg: RunConfig) -> bool:
    """Whether the run asks for SecAgg+ (validates the ``secagg.*`` keys)."""
    return cfg.secagg.enabled
