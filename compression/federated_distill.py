"""Distillation without pooled data: the student learns where the rows are.

Two sources, one round loop (:func:`run_distillation`):

``federated``         every sampled base station trains the student on its *own*
                      training rows against the frozen merged teacher (KD +
                      hidden-state loss, its own labels at ``label_weight``); the server
                      averages the students' parameters (FedAvg, weighted by rows) and
                      sends the average back next round.
``server-generated``  the server distils on channels it generates itself (a TR 38.901
                      drop with the run's radio block, or a named preset; see
                      :func:`rantune.compression.data.server_channels`), teacher outputs
                      only (no labels); its single participant is the server, nothing
                      travels.

Why a loop here and not :mod:`rantune.server.loop`: that loop's global state is the
LoRA adapter + head of one :class:`~rantune.federated.workload.ModelSpec`; its client
(:class:`~rantune.federated.local.LocalJob`) trains LoRA on labels, and its evaluator,
checkpoints and dense-delta bookkeeping are keyed by that spec. A whole student of
another architecture, trained on a teacher's outputs, would need a second client
message kind, a second rule and evaluator in ``server/`` and ``client/``; and
``compression`` does not import Flower. So this module is the smallest FedAvg loop over
the same per-station row access as the LocalJob (:class:`StationRows`:
``FederatedData.tensors(task, pid, "train")``, the run's row caps applied), drawing
stations with the round loop's own seeded sampler
(:class:`rantune.server.sampling.SeededSampler`, stream ``"sample-distill"``) and
counting bytes with the loop's one measure (:func:`rantune.federated.messages.
record_bytes`: the ``.npy`` size plus key of every tensor; imported only when bytes are
counted, so ``import rantune.compression`` stays Flower-free).

Bytes per round and station: the global student (+ the hidden-state projection) down,
the trained one up; once per station the run's global adapter + head (``teacher-down``:
a station rebuilds the merged teacher from the base encoder it already holds).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor, nn

from rantune.compression.distill import DistillSettings, distill, hidden_projection
from rantune.compression.prune import PruneSettings, importance_scores
from rantune.errors import InputError
from rantune.federated.run_config import RunConfig
from rantune.federated.splits import FederatedData
from rantune.seeding import derive_seed
from rantune.server.sampling import SeededSampler
from rantune.tasks import Task

FEDERATED = "federated"
SERVER_GENERATED = "server-generated"
LABELS = {FEDERATED: "own rows only", SERVER_GENERATED: "none"}
SERVER = "server"

Rows = tuple[Tensor, Tensor | None]


def state_bytes(state: Mapping[str, object]) -> int:
    """Bytes of ``{key: tensor/ndarray}`` as one ArrayRecord message carries them
    (:func:`rantune.federated.messages.record_bytes`, the round loop's measure)."""
    from rantune.federated.messages import record_bytes, state_to_record

    return record_bytes(state_to_record(state)) if state else 0


class StationRows:
    """A base station's own training rows: what its LocalJob trains on.

    Parameters
    ----------
    data : the run's stations (:class:`FederatedData`); only this station's rows are read.
    task : gives the inputs and targets.
    partition_id : the station (client) id.
    max_rows : optional cap (seeded subset of the station's rows).
    seed : seed of that subset.

    Calling it returns ``(x [N, ...], y [N, ...])`` (loaded once, then kept).
    """

    def __init__(
        self,
        data: FederatedData,
        task: Task,
        partition_id: int,
        max_rows: int | None = None,
        seed: int = 0,
    ) -> None:
        self.data, self.task, self.partition_id = data, task, partition_id
        self.max_rows, self.seed = max_rows, seed
        self._rows: Rows | None = None

    def __call__(self) -> Rows:
        if self._rows is None:
            rows = self.data.rows(self.partition_id, "train")
            if self.max_rows is not None and len(rows) > self.max_rows:
                rng = np.random.default_rng(
                    derive_seed(self.seed, "distill-rows", self.partition_id)
                )
                rows = np.sort(rng.choice(rows, size=self.max_rows, replace=False))
            self._rows = self.data.tensors_of(self.task, rows)
        return self._rows


@dataclass(frozen=True)
class Participant:
    """Who trains the student: a base station (``remote``: parameters travel) or the server.

    ``rows()`` gives the participant's own ``(x, y)``; ``y`` is ``None`` without labels.
    """

    name: str
    rows: Callable[[], Rows]
    remote: bool = True


@dataclass
class DistillSource:
    """Where a distillation's rows are and who trains (see the module docstring).

    Attributes
    ----------
    mode : :data:`FEDERATED` or :data:`SERVER_GENERATED`.
    participants : the stations (federated) or the server alone.
    sampler : draws the stations of each round (federated); ``None``: all, every round.
    info : facts for the manifest (e.g. the server's generated drop).
    """

    mode: str
    participants: tuple[Participant, ...]
    sampler: SeededSampler | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in LABELS:
            raise InputError(f"distillation mode {self.mode!r} is unknown: {sorted(LABELS)}")
        if not self.participants:
            raise InputError("distillation needs at least one participant (station or server)")

    @property
    def labels(self) -> str:
        return LABELS[self.mode]

    def draw(self, server_round: int) -> list[Participant]:
        """The participants of one round (sorted by name)."""
        if self.sampler is None:
            return list(self.participants)
        chosen = self.sampler.draw(server_round, list(self.participants))
        return sorted(chosen, key=lambda p: p.name)


def federated_source(
    cfg: RunConfig, data: FederatedData, task: Task, max_rows: int | None = None
) -> DistillSource:
    """One participant per client of the run's partitioning, drawn as the run drew them.

    Raises
    ------
    InputError
        For a run with differential privacy or secure aggregation: this loop adds no DP
        noise and the server sees each station's student, so it would break the run's
        guarantee (distil on server-generated channels instead).
    """
    if cfg.dp.enabled or cfg.secagg.enabled:
        what = "differential privacy" if cfg.dp.enabled else "secure aggregation"
        raise InputError(
            f"the run used {what}; federated distillation sends each station's student in "
            "the clear (no DP noise, no SecAgg+): use --distill server (teacher outputs on "
            "channels the server generates) or --distill off"
        )
    s = cfg.sampling
    sampler = SeededSampler(
        cfg.seed, "sample-distill", s.fraction_train, s.min_train_clients, s.min_available_clients
    )
    stations = tuple(
        Participant(str(pid), StationRows(data, task, pid, max_rows, cfg.seed))
        for pid in range(data.num_clients)
    )
    return DistillSource(FEDERATED, stations, sampler)


def server_source(x: Tensor, info: Mapping[str, object]) -> DistillSource:
    """The server distilling alone on inputs ``x [N, ...]`` it generated (no labels)."""
    return DistillSource(
        SERVER_GENERATED, (Participant(SERVER, lambda: (x, None), remote=False),), info=dict(info)
    )


def _trainable(student: nn.Module, proj: nn.Module) -> dict[str, Tensor]:
    state = {f"student.{k}": v.detach().clone() for k, v in student.named_parameters()}
    state.update({f"proj.{k}": v.detach().clone() for k, v in proj.named_parameters()})
    return state


def _load(student: nn.Module, proj: nn.Module, state: Mapping[str, Tensor]) -> None:
    with torch.no_grad():
        for prefix, module in (("student.", student), ("proj.", proj)):
            for name, param in module.named_parameters():
                param.copy_(state[prefix + name])


def _average(updates: Sequence[tuple[Mapping[str, Tensor], int]]) -> dict[str, Tensor]:
    """FedAvg: the rows-weighted mean of every parameter."""
    total = sum(n for _, n in updates)
    return {key: sum(state[key] * (n / total) for state, n in updates) for key in updates[0][0]}


def run_distillation(
    teacher: nn.Module,
    student: nn.Module,
    task: Task,
    source: DistillSource,
    settings: DistillSettings,
    rounds: int,
    teacher_bytes: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train ``student`` in place by ``rounds`` rounds of local distillation + FedAvg.

    Parameters
    ----------
    teacher : frozen merged fp32 teacher (eval mode); every participant holds it.
    student : the model being trained (all its parameters train and travel).
    task : the task (KD loss kind, label loss).
    source : participants and their sampler (:func:`federated_source`,
        :func:`server_source`).
    settings : one participant's local pass (``epochs`` = local epochs per round);
        the seed of station ``p`` in round ``r`` is ``derive_seed(seed, "distill", r, p)``.
    rounds : communication rounds (>= 1).
    teacher_bytes : bytes a station downloads once to rebuild the teacher.
    log : progress callback.

    Returns
    -------
    dict
        The manifest's ``distillation`` record: ``mode``, ``rounds``, ``stations``
        (ids that took part; ``[]`` for the server), ``labels``, ``rows`` (per
        participant), ``local_epochs``, ``bytes`` (``teacher-down``, ``student-down``,
        ``student-up``, ``total``) and ``per_round`` (sampled, losses, bytes).
    """
    if not isinstance(rounds, int) or rounds < 1:
        raise InputError(f"distillation rounds={rounds!r} is invalid: expected >= 1")
    log = log or (lambda message: None)
    proj = hidden_projection(student, teacher)
    global_state = _trainable(student, proj)
    remote = any(p.remote for p in source.participants)
    payload = state_bytes(global_state) if remote else 0
    local, local_proj = copy.deepcopy(student), copy.deepcopy(proj)
    labelled = source.mode == FEDERATED
    rows: dict[str, int] = {}
    totals = {"teacher-down": 0, "student-down": 0, "student-up": 0}
    per_round = []
    for server_round in range(1, rounds + 1):
        chosen = source.draw(server_round)
        if not chosen:
            raise InputError(f"distillation round {server_round} drew no participant")
        updates, losses, moved = [], {}, 0
        for participant in chosen:
            _load(local, local_proj, global_state)
            x, y = participant.rows()
            seed = derive_seed(settings.seed, "distill", server_round, participant.name)
            result = distill(
                teacher, local, task, x, y if labelled else None,
                settings=replace(settings, seed=seed), proj=local_proj,
            )  # fmt: skip
            updates.append((_trainable(local, local_proj), len(x)))
            losses[participant.name] = result["loss"]
            if participant.remote:
                if participant.name not in rows:
                    totals["teacher-down"] += teacher_bytes
                totals["student-down"] += payload
                totals["student-up"] += payload
                moved += 2 * payload
            rows[participant.name] = len(x)
        global_state = _average(updates)
        mean_loss = float(np.mean(list(losses.values())))
        per_round.append(
            {"round": server_round, "sampled": [p.name for p in chosen], "loss": losses,
             "bytes": moved}
        )  # fmt: skip
        log(f"distillation round {server_round}/{rounds}: {len(chosen)} participant(s), "
            f"mean loss {mean_loss:.4f}")  # fmt: skip
    _load(student, proj, global_state)
    student.eval()
    return {
        "mode": source.mode,
        "rounds": rounds,
        "stations": sorted((n for n in rows if n != SERVER), key=int),
        "labels": source.labels,
        "rows": rows,
        "local_epochs": settings.epochs,
        "bytes": {**totals, "total": sum(totals.values())},
        "per_round": per_round,
        **({"server_data": source.info} if source.info else {}),
    }


def source_importance(
    model: nn.Module, task: Task, source: DistillSource, settings: PruneSettings,
    teacher_bytes: int = 0,
) -> tuple[tuple[list[Tensor], list[Tensor], str], dict]:  # fmt: skip
    """Head / FFN-channel importance of ``model`` summed over every participant's own rows.

    ``settings.max_rows`` rows are scored in all, each participant's share in proportion
    to its rows (:func:`rantune.compression.prune.importance_scores` sums over rows, so
    the total weighs participants by rows, as one pooled sample would); stations use
    their own labels (``taylor`` under ``auto``), the server has none (``activation``).
    Returns ``(heads, channels, method)`` and ``{"participants", "rows", "bytes"}``
    (scores up, teacher down).
    """
    heads: list[Tensor] | None = None
    channels: list[Tensor] | None = None
    used, moved, scored = settings.importance, 0, {}
    labelled = source.mode == FEDERATED
    total = sum(len(p.rows()[0]) for p in source.participants)
    for participant in source.participants:
        x, y = participant.rows()
        share = max(1, round(settings.max_rows * len(x) / total))
        x = x[:share]
        y = y[:share] if (labelled and y is not None) else None
        scored[participant.name] = len(x)
        h, c, used = importance_scores(model, x, y, task, settings.importance, settings.batch_size)
        heads = h if heads is None else [a + b for a, b in zip(heads, h, strict=True)]
        channels = c if channels is None else [a + b for a, b in zip(channels, c, strict=True)]
        if participant.remote:
            scores = {f"heads.{i}": v for i, v in enumerate(h)}
            scores.update({f"ffn.{i}": v for i, v in enumerate(c)})
            moved += state_bytes(scores) + teacher_bytes
    info = {"participants": [p.name for p in source.participants], "rows": scored, "bytes": moved}
    return (heads, channels, used), info
