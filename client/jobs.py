"""The base-station jobs one ClientApp process keeps between rounds.

Flower recreates the ClientApp for every message and hands it its node's ``Context``
(``run_config``, ``node_config`` and a ``state`` RecordDict that persists for the run
but holds serialised records only, no Python objects: Flower's "Design stateful
ClientApps" guide). A process (a Ray actor, the in-process engine) may serve many
nodes and, over its life, several runs; the
:class:`JobRegistry` keeps, per run config, the parsed :class:`RunConfig`, the
stations' data, one :class:`~rantune.federated.downlink.ModelPool` and one
:class:`~rantune.federated.local.LocalJob` per (partition id, rank), built on first
use. Only the last ``max_runs`` run configs are kept, so a long-lived worker that
runs one configuration after another does not accumulate them.

Per-node state that must survive the job (``keep-local`` tensors, the error-feedback
residual) stays in ``context.state``, so dropping a job loses nothing; where Flower
starts a fresh ClientApp process per message (a SuperNode's subprocess isolation) the
job is simply rebuilt for each message.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from flwr.app import Context

from rantune.federated.downlink import ModelPool
from rantune.federated.local import LocalJob, NodeIdentity, node_identity
from rantune.federated.run_config import RunConfig, parse_run_config
from rantune.federated.splits import FederatedData


@dataclass
class _Run:
    """What the registry keeps for one run config."""

    cfg: RunConfig
    models: ModelPool = field(default_factory=ModelPool)
    data: FederatedData | None = None
    jobs: dict[NodeIdentity, LocalJob] = field(default_factory=dict)


class JobRegistry:
    """Per-process jobs keyed by (run config, node identity); see the module docstring.

    Parameters
    ----------
    max_runs : run configs kept at once (least recently used dropped first).
    """

    def __init__(self, max_runs: int = 2) -> None:
        self.max_runs = max_runs
        self._runs: OrderedDict[tuple, _Run] = OrderedDict()
        self._lock = threading.RLock()

    def _run(self, run_config: Mapping[str, object]) -> _Run:
        key = tuple(sorted(run_config.items()))
        with self._lock:
            if key not in self._runs:
                self._runs[key] = _Run(parse_run_config(run_config))
                while len(self._runs) > self.max_runs:
                    self._runs.popitem(last=False)
            self._runs.move_to_end(key)
            return self._runs[key]

    def node(self, context: Context) -> NodeIdentity:
        """Which base station the node is (its partition id and rank); loads no data."""
        return node_identity(self._run(context.run_config).cfg, context.node_config)

    def __reduce__(self):
        """Pickled (Ray ships the ClientApp to its actors) as a reference to the
        receiving process's own :data:`JOBS`, or as a fresh empty registry: jobs belong
        to the process that built them."""
        return "JOBS" if self is JOBS else (JobRegistry, (self.max_runs,))

    def job(self, context: Context) -> LocalJob:
        """The node's job, built on first use (its rows loaded, its model in the pool)."""
        run = self._run(context.run_config)
        node = node_identity(run.cfg, context.node_config)
        with self._lock:
            if node not in run.jobs:
                if run.data is None:
                    run.data = FederatedData.load(run.cfg.data, run.cfg.partition)
                run.jobs[node] = LocalJob(run.cfg, node, run.data, run.models)
            return run.jobs[node]


JOBS = JobRegistry()
"""The registry of this process's shipped ClientApp (and its SecAgg+ mod)."""
