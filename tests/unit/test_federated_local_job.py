"""A base station's LocalJob, the per-process JobRegistry, the ModelPool and the row source.

Proves: a node's job is built once and kept between rounds; a job holds exactly its
own rows (the same tensors a pooled copy would give); models are keyed by their
whole spec (another head never reuses a kept model); rows are gathered from the
stations without a pooled copy; the client count needs no data; one seed function.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict

from rantune.channels import ChannelDataset
from rantune.client.jobs import JobRegistry
from rantune.errors import InputError
from rantune.federated import splits, workload
from rantune.federated.downlink import ModelPool
from rantune.federated.messages import state_to_record
from rantune.seeding import derive_seed
from rantune.simulations.engine import resolve_config
from rantune.tasks import get_task

BASE = {"data.preset": "smoke", "task": "los", "model.pretrained": "none"}


def _context(flat: dict, pid: int, node_id: int = 1) -> Context:
    return Context(
        run_id=1,
        node_id=node_id,
        node_config={"partition-id": pid, "num-partitions": 3},
        state=RecordDict(),
        run_config=flat,
    )


def test_a_node_job_is_built_once_and_kept_between_rounds():
    # Prepare
    registry = JobRegistry(max_runs=1)
    flat = resolve_config(BASE).flat_dict()
    other = resolve_config({**BASE, "seed": 1}).flat_dict()

    # Execute
    first = registry.job(_context(flat, 0))
    again = registry.job(_context(flat, 0, node_id=99))  # a new Context of the same node
    neighbour = registry.job(_context(flat, 1))
    moved_on = registry.job(_context(other, 0))  # another run: the first one is dropped
    rebuilt = registry.job(_context(flat, 0))

    # Assert
    assert again is first and neighbour is not first
    assert neighbour.models is first.models  # one model pool per run and process
    assert moved_on is not first and rebuilt is not first
    assert moved_on.cfg.seed == 1


def test_a_job_holds_exactly_its_own_rows_as_a_pooled_copy_would_give_them(smoke_sites):
    # Prepare
    cfg = resolve_config({**BASE, "data.max-train-rows": 10})
    data = splits.FederatedData.load(cfg.data, cfg.partition)
    pooled = ChannelDataset.concat(list(smoke_sites))
    task = get_task(cfg.task)

    # Execute
    job = JobRegistry().job(_context(cfg.flat_dict(), 2))

    # Assert
    for name, (x, y) in {"train": job.train_xy, "val": job.val_xy, "test": job.test_xy}.items():
        rows = data.rows(2, name)
        want_x, want_y = task.tensors(pooled, rows)
        assert len(x) == len(rows) and (name != "train" or len(x) == 10)
        torch.testing.assert_close(x, want_x)
        torch.testing.assert_close(y, want_y)
        assert np.all(pooled["site_index"][rows] == 2)  # natural split: its own station only


def test_train_then_evaluate_through_the_job_uses_the_received_state():
    # Prepare
    cfg = resolve_config(BASE)
    job = JobRegistry().job(_context(cfg.flat_dict(), 0))
    received = state_to_record(job.init_state)
    node_state = RecordDict()

    # Execute
    record, metrics = job.train(received, {"server-round": 1, "local-epochs": 1}, node_state)
    evaluation = job.evaluate(record, {}, node_state)

    # Assert
    assert metrics["num-examples"] == len(job.train_xy[0]) and metrics["partition-id"] == 0
    assert sorted(record) == job.trainable_keys
    assert evaluation["num-examples"] == len(job.test_xy[0])
    with pytest.raises(InputError, match="does not have"):
        job.train(state_to_record({"not.a.key": np.zeros(2, np.float32)}), {}, node_state)


def test_models_are_kept_per_whole_spec_so_another_head_is_never_reused():
    # Prepare
    pool = ModelPool()
    pooled_head = workload.model_spec(resolve_config(BASE))
    mlp_head = workload.model_spec(resolve_config({**BASE, "model.head": "token-mlp"}))

    # Execute
    a, b = pool.model(pooled_head), pool.model(mlp_head)
    dense_a = pool.model(pooled_head, {})

    # Assert
    assert a is pool.model(pooled_head) and a is not b and dense_a is not a
    assert set(pool.init_state(pooled_head)) != set(pool.init_state(mlp_head))
    assert pool.model(workload.model_spec(resolve_config(BASE), rank=2)) is not a


def test_take_gathers_rows_from_the_stations_in_any_order(smoke_sites):
    # Prepare
    cfg = resolve_config(BASE)
    data = splits.FederatedData.load(cfg.data, cfg.partition)
    pooled = ChannelDataset.concat(list(smoke_sites))
    rows = np.random.default_rng(0).permutation(len(pooled))[:37]

    # Execute
    taken = data.take(rows)

    # Assert
    for field in ("csi_noisy", "los", "site_index", "beam_gains"):
        np.testing.assert_array_equal(taken[field], pooled[field][rows])
    with pytest.raises(InputError, match="outside"):
        data.take(np.array([len(pooled)]))


def test_the_client_count_needs_no_data_and_matches_the_partitioning():
    # Prepare
    natural = resolve_config(BASE)
    dirichlet = resolve_config({**BASE, "partition.scheme": "iid", "partition.num-clients": 5})

    # Execute
    counts = [splits.num_clients(c.data, c.partition) for c in (natural, dirichlet)]

    # Assert
    assert counts == [3, 5]
    assert splits.FederatedData.load(natural.data, natural.partition).num_clients == 3
    with pytest.raises(InputError, match="one client per site"):
        wrong = resolve_config({**BASE, "partition.num-clients": 4})
        splits.num_clients(wrong.data, wrong.partition)


def test_one_seed_function_with_pinned_outputs():
    # Prepare / Execute
    seeds = [derive_seed(0, "client-train", 1, 2), derive_seed(7, "init")]

    # Assert: pinned so that a change of the function (and of every run's numbers) shows here
    assert seeds == [derive_seed(0, "client-train", (1, 2)), derive_seed(7, ("init",))]
    assert all(0 <= s < 2**31 for s in seeds) and seeds[0] != derive_seed(0, "client-train", 2, 1)
    assert seeds == PINNED
    with pytest.raises(TypeError):
        derive_seed(0, 1.5)


PINNED = [1822010069, 1485577830]


def test_the_client_app_pickles_as_ray_ships_it_and_jobs_stay_per_process():
    # Prepare: Ray sends the ClientApp to its actors with cloudpickle
    from ray import cloudpickle

    from rantune.client.app import app, build_client_app
    from rantune.client.jobs import JOBS

    own = JobRegistry(max_runs=3)
    own.job(_context(resolve_config(BASE).flat_dict(), 0))

    # Execute
    shipped = cloudpickle.loads(cloudpickle.dumps(app))
    copied = cloudpickle.loads(cloudpickle.dumps(own))
    cloudpickle.dumps(build_client_app(jobs=own))

    # Assert
    assert type(shipped) is type(app)
    assert cloudpickle.loads(cloudpickle.dumps(JOBS)) is JOBS
    assert copied is not own and copied.max_runs == 3 and not copied._runs
