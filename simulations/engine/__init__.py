"""Fast in-process engine: the same ServerApp, ClientApp and strategies, without Ray.

>>> from simulations.engine import run_simulation
>>> history = run_simulation({"data.preset": "smoke", "task": "los", "num-server-rounds": 2,
...                           "out-dir": "runs/smoke"})
>>> history["final"]["accuracy"]

``run_simulation`` calls ``server.app.app`` (the very ``ServerApp`` that ``flwr run``
loads) with an :class:`~simulations.engine.grid.InProcessGrid` that runs
``client.app.app`` for each message in this process, or with ``workers=N`` on N
worker processes that keep their base stations' jobs between rounds
(:mod:`rantune.simulations.engine.pool`; the same numbers as ``workers=1``). Outputs,
resume and byte accounting are those of the ServerApp (``OUT/history.json`` etc.).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID

from rantune.errors import InputError
from rantune.federated import splits, workload
from rantune.federated.run_config import RunConfig, Scalar, resolve_run_config
from rantune.simulations.engine.grid import ClientCallable, InProcessGrid
from rantune.simulations.engine.identity import server_identity

__all__ = [
    "EngineStats",
    "check_node_data",
    "InProcessGrid",
    "node_configs_for",
    "resolve_config",
    "run_simulation",
]


def resolve_config(overrides: Mapping[str, Scalar] | RunConfig | None = None) -> RunConfig:
    """A full :class:`RunConfig` from partial flat overrides (unknown keys fail)."""
    if isinstance(overrides, RunConfig):
        return overrides
    cfg = resolve_run_config(overrides or {})
    from rantune.server.strategies import check_compatible

    check_compatible(cfg)
    splits.num_clients(cfg.data, cfg.partition)  # an unknown preset fails here
    workload.check_custom_model(cfg)  # a bad model.encoder / lora.targets fails here
    return cfg


def node_configs_for(
    cfg: RunConfig, extra: Mapping[int, Mapping[str, Scalar]] | None = None
) -> list[dict]:
    """One node config per client of the run's partitioning (``partition-id``,
    ``num-partitions``), merged with per-partition extras such as ``{"lora-r": 8}``."""
    n = splits.num_clients(cfg.data, cfg.partition)
    extra = extra or {}
    return [{"partition-id": i, "num-partitions": n, **dict(extra.get(i, {}))} for i in range(n)]


def check_node_data(cfg: RunConfig, node_configs: list[dict]) -> None:
    """Fail before anything runs if a node config's ``data-path`` is missing or holds
    another station than the node's partition (the check a deployed ClientApp makes)."""
    from rantune.federated.local import DATA_PATH, node_data, node_identity

    for node_config in node_configs:
        if node_config.get(DATA_PATH):
            node_data(cfg, node_identity(cfg, node_config))


@dataclass
class EngineStats:
    """Wall-time split of the last :func:`run_simulation` call (seconds)."""

    total_s: float = 0.0
    client_s: float = 0.0
    client_calls: int = 0


last_stats = EngineStats()


def _check_sampling(cfg: RunConfig, num_nodes: int) -> None:
    s = cfg.sampling
    for key, value in (
        ("min-available-clients", s.min_available_clients),
        ("min-train-clients", s.min_train_clients),
        ("min-evaluate-clients", s.min_evaluate_clients),
    ):
        if value > num_nodes:
            raise InputError(
                f"{key}={value} but the run has {num_nodes} clients: Flower would wait forever; "
                f"set {key} <= {num_nodes}"
            )


def run_simulation(
    config: Mapping[str, Scalar] | RunConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    node_configs: list[dict] | None = None,
    client_app: ClientCallable | None = None,
    server_app=None,
    run_id: int = 1,
    workers: int = 1,
) -> dict:
    """Run (or resume) a federated run in this process; returns ``history.json``'s content.

    Parameters
    ----------
    config : flat run-config overrides (``{"task": "beam", "lora.r": 8}``) or a
        resolved :class:`RunConfig`. Unknown keys fail with the list of valid ones.
    out_dir : overrides the config's ``out-dir``.
    node_configs : one dict per node; default: one node per client of the partitioning.
    client_app, server_app : default ``client.app.app`` and ``server.app.app``; tests
        pass wrappers (e.g. a client that fails; module-level callables with ``workers``).
    run_id : the run id in message metadata.
    workers : worker processes that run the clients (1 = in this process).
    """
    import json

    if isinstance(config, RunConfig):
        cfg = config
    else:
        overrides = dict(config or {})
        if out_dir is not None:
            overrides["out-dir"] = str(out_dir)
        cfg = resolve_config(overrides)
    if out_dir is not None and cfg.out_dir != str(out_dir):
        cfg = cfg.with_overrides(**{"out-dir": str(out_dir)})
    custom_client = client_app
    if client_app is None:
        from rantune.client.app import app as client_app
    if server_app is None:
        from rantune.server.app import app as server_app
    nodes = node_configs if node_configs is not None else node_configs_for(cfg)
    _check_sampling(cfg, len(nodes))
    check_node_data(cfg, nodes)
    run_config = cfg.flat_dict()
    pool = None
    if workers > 1:
        from rantune.simulations.engine.pool import WorkerPool

        pool = WorkerPool(workers, run_config, client_app=custom_client, run_id=run_id)
    elif workers < 1:
        raise InputError(f"workers={workers} is invalid: expected >= 1")
    grid = InProcessGrid(client_app, run_config, nodes, run_id=run_id, pool=pool)
    context = Context(
        run_id=run_id,
        node_id=SUPERLINK_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=run_config,
    )
    start = time.perf_counter()
    try:
        with server_identity(run_id):
            server_app(grid, context)
    finally:
        if pool is not None:
            pool.close()
    last_stats.total_s = time.perf_counter() - start
    last_stats.client_s = grid.client_seconds
    last_stats.client_calls = grid.calls
    history_path = Path(cfg.out_dir).expanduser().resolve() / "history.json"
    return json.loads(history_path.read_text())
