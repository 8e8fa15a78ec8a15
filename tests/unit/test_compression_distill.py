"""Federated distillation: each station's update sees only its own rows, stations are drawn
by the round loop's seeded sampler, the student gets closer to the teacher, bytes add up."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rantune.compression.distill import (
    DistillSettings,
    build_student,
    hidden_projection,
    student_config,
)
from rantune.compression.federated_distill import (
    DistillSource,
    Participant,
    federated_source,
    run_distillation,
    state_bytes,
)
from rantune.compression.merge import merge_lora
from rantune.errors import InputError
from rantune.federated import workload
from rantune.federated.run_config import resolve_run_config
from rantune.federated.splits import FederatedData, preset
from rantune.server.sampling import SeededSampler
from rantune.tasks import get_task, predict

SETTINGS = DistillSettings(epochs=1, batch_size=32)
OVERRIDES = {"task": "los", "data.preset": "smoke", "model.pretrained": "none"}


@pytest.fixture(scope="module")
def world():
    """A tiny random-encoder teacher (merged, untrained LoRA) and the smoke stations."""
    torch.set_num_threads(1)
    cfg = resolve_run_config(OVERRIDES)
    task = get_task(cfg.task, cfg.task_options)
    teacher = merge_lora(workload.build_model(workload.model_spec(cfg)))
    data = FederatedData.load(cfg.data, cfg.partition)
    return cfg, task, teacher, data


def _student(world, random_init: bool = False):
    cfg, task, teacher, _ = world
    t_cfg = teacher.encoder.config
    if random_init:  # another width: the student starts from a seeded random init
        s_cfg = student_config(t_cfg, 2, d_model=32, num_heads=2, ffn_dim=64)
    else:
        s_cfg = student_config(t_cfg, 1)
    student, _ = build_student(teacher, task, preset(cfg.data).radio, s_cfg, seed=0)
    return student


def _keys(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x}


def test_each_station_update_sees_only_its_own_rows(world, monkeypatch):
    # Prepare: two of three stations per round; every row access and teacher batch logged
    cfg, task, teacher, data = world
    cfg = cfg.with_overrides(**{"fraction-train": 0.67})
    own = {str(p): _keys(data.tensors(task, p, "train")[0]) for p in range(data.num_clients)}
    current: list[str | None] = [None]
    calls: list[tuple[str, int | None, str]] = []
    original_rows = FederatedData.rows

    def logged_rows(self, client, split):
        calls.append((current[0], client, split))
        return original_rows(self, client, split)

    monkeypatch.setattr(FederatedData, "rows", logged_rows)
    source = federated_source(cfg, data, task)
    order: list[str] = []

    def instrumented(participant: Participant) -> Participant:
        def rows():
            current[0] = participant.name
            order.append(participant.name)
            return participant.rows()

        return Participant(participant.name, rows, participant.remote)

    source = DistillSource(
        source.mode, tuple(instrumented(p) for p in source.participants), source.sampler
    )
    seen: list[tuple[str, torch.Tensor]] = []
    hook = teacher.register_forward_pre_hook(lambda m, args: seen.append((current[0], args[0])))
    try:
        # Execute
        record = run_distillation(teacher, _student(world), task, source, SETTINGS, rounds=2)
    finally:
        hook.remove()
    # Assert: the seeded sampler of the round loop drew the stations of each round
    sampler = SeededSampler(cfg.seed, "sample-distill", 0.67, 2, 2)
    expected = [sorted(str(p) for p in sampler.draw(r, [0, 1, 2])) for r in (1, 2)]
    assert [r["sampled"] for r in record["per_round"]] == expected
    assert order == expected[0] + expected[1]
    # each station read only its own training split, and only while it trained
    assert calls and all(split == "train" and str(client) == who for who, client, split in calls)
    # every row the teacher scored during a station's update is one of that station's rows
    assert seen
    for who, batch in seen:
        keys = _keys(batch)
        assert keys <= own[who]
        assert not any(keys & own[other] for other in own if other != who)
    per_station = {who: sum(len(b) for w, b in seen if w == who) for who in own}
    for who in own:
        rounds_in = sum(who in r for r in expected)
        assert per_station[who] == rounds_in * len(own[who])
    assert record["labels"] == "own rows only" and record["mode"] == "federated"


def test_federated_distillation_moves_the_student_closer_to_the_teacher(world):
    # Prepare: an untrained (random-init) student and its fidelity on the global test set
    cfg, task, teacher, data = world
    x_test, _ = data.tensors(task, None, "test")
    student = _student(world, random_init=True)

    def kl_to_teacher(model) -> float:
        t, s = predict(teacher, x_test), predict(model, x_test)
        log_s, log_t = F.log_softmax(s, -1), F.log_softmax(t, -1)
        return float(F.kl_div(log_s, log_t, log_target=True, reduction="batchmean"))

    before = kl_to_teacher(student)
    payload = state_bytes(
        {
            **{f"student.{k}": v for k, v in student.named_parameters()},
            **{f"proj.{k}": v for k, v in hidden_projection(student, teacher).named_parameters()},
        }
    )
    source = federated_source(cfg, data, task)
    # Execute: 2 rounds, all 3 stations (fraction-train 1.0)
    record = run_distillation(
        teacher, student, task, source, SETTINGS, rounds=2, teacher_bytes=1000
    )
    # Assert: closer to the teacher on rows no station trained on; bytes as sent
    assert kl_to_teacher(student) < 0.75 * before
    assert record["stations"] == ["0", "1", "2"] and record["rounds"] == 2
    assert record["bytes"]["student-down"] == record["bytes"]["student-up"] == 2 * 3 * payload
    assert record["bytes"]["teacher-down"] == 3 * 1000
    assert record["rows"] == {str(p): len(data.rows(p, "train")) for p in range(3)}


def test_same_seed_same_student(world):
    # Prepare
    cfg, task, teacher, data = world
    students = [_student(world), _student(world)]
    # Execute
    for student in students:
        run_distillation(teacher, student, task, federated_source(cfg, data, task), SETTINGS, 1)
    # Assert
    a, b = (dict(s.named_parameters()) for s in students)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_private_runs_refuse_federated_distillation(world):
    # Prepare
    _, task, _, data = world
    private = resolve_run_config({**OVERRIDES, "dp.mode": "server-fixed"})
    # Execute / Assert
    with pytest.raises(InputError, match="use --distill server"):
        federated_source(private, data, task)


def test_rounds_must_be_positive(world):
    cfg, task, teacher, data = world
    with pytest.raises(InputError, match="rounds=0"):
        run_distillation(teacher, _student(world), task, federated_source(cfg, data, task),
                         SETTINGS, rounds=0)  # fmt: skip


def test_importance_summed_over_stations_equals_one_pooled_pass(world):
    # Prepare: activation importance is a sum over rows, so the stations' sum must equal
    # what one pass over their rows pooled would give (without pooling them)
    from rantune.compression.federated_distill import source_importance
    from rantune.compression.prune import PruneSettings, importance_scores

    cfg, task, teacher, data = world
    source = federated_source(cfg, data, task)
    settings = PruneSettings(importance="activation", max_rows=10_000)
    pooled_x = torch.cat([p.rows()[0] for p in source.participants])
    # Execute
    (heads, channels, used), info = source_importance(teacher, task, source, settings, 7)
    ref_heads, ref_channels, _ = importance_scores(teacher, pooled_x, method="activation")
    # Assert
    assert used == "activation"
    assert info["rows"] == {p.name: len(p.rows()[0]) for p in source.participants}
    for got, ref in zip(heads + channels, ref_heads + ref_channels, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)
    assert info["bytes"] > 3 * 7  # scores up plus the teacher's bytes per station
