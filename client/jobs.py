"""The base-station jobs one ClientApp process keeps between rounds.

Flower recreates the ClientApp for every message and hands it its node's ``Context``
(``run_config``, ``node_config`` and a ``state`` RecordDict that persists for the run
but holds serialised records only, no Python objects: Flower's "Design stateful
ClientApps" guide). A process (a Ray actor, the in-process engine) may serve many
nodes and, over its life, several runs; the
:class:`JobRegistry` keeps, per run config, the parsed :class:`RunConfig`, the
stations (:class:`~rantune.federated.splits.FederatedData`: opened on use, each job
reads only its own rows, memory-mapped), one
:class:`~rantune.federated.downlink.ModelPool` and one
:class:`~rantune.federated.local.LocalJob` per (partition id, rank, data path), built
on first use. Only the last ``max_runs`` run configs and, per run, the ``max_jobs``
most recently used jobs are kept, so a long-lived worker that serves a sample of a
large federation, or runs one configuration after another, holds what the clients
sampled recently need, not the whole federation. A node with a node-config
``data-path`` (a deployed base station) reads only that station directory.

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
from rantune.federated.local import LocalJob, NodeIdentity, node_data, node_identity
from rantune.federated.run_config import RunConfig, parse_run_config
from rantune.federated.splits import FederatedData


@dataclass
class _Run:
    """What the registry keeps for one run config."""

    cfg: RunConfig
    models: ModelPool = field(default_factory=ModelPool)
    data: FederatedData | None = None
    jobs: OrderedDict[NodeIdentity, LocalJob] = field(default_factory=OrderedDict)


class JobRegistry:
    """Per-process jobs keyed by (run config, node identity); see the module docstring.

    Parameters
    ----------
    max_runs : run configs kept at once (least recently used dropped first).
    max_jobs : jobs kept per run (least recently used dropped first; a dropped job is
        rebuilt from its memory-mapped shard when its node is sampled again).
    """

    def __init__(self, max_runs: int = 2, max_jobs: int = 128) -> None:
        self.max_runs = max_runs
        self.max_jobs = max_jobs
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
        return "JOBS" if self is JOBS else (JobRegistry, (self.max_runs, self.max_jobs))

    def job(self, context: Context) -> LocalJob:
        """The node's job, built on first use (its rows loaded, its model in the pool)."""
        run = self._run(context.run_config)
        node = node_identity(run.cfg, context.node_config)
        with self._lock:
            if node not in run.jobs:
                if node.data_path:  # a deployed base station: its own station directory
                    data = node_data(run.cfg, node)
                else:
                    if run.data is None:
                        run.data = node_data(run.cfg, node)
                    data = run.data
                run.jobs[node] = LocalJob(run.cfg, node, data, run.models)
                while len(run.jobs) > self.max_jobs:
                    run.jobs.popitem(last=False)
            run.jobs.move_to_end(node)
            return run.jobs[node]


JOBS = JobRegistry()
"""The registry of this process's shipped ClientApp (and its SecAgg+ mod)."""
