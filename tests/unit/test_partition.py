"""Non-IID partitioning: disjoint, complete, natural per site, alpha controls label skew."""

from __future__ import annotations

import numpy as np
import pytest

from rantune.partition import (
    PartitionConfig,
    label_histograms,
    label_skew,
    parse_scheme,
    partition,
)

NUM_SITES, PER_SITE, NUM_BEAMS = 4, 250, 16


@pytest.fixture(scope="module")
def pooled():
    """1000 rows from 4 sites; beam labels uniform, LoS more likely at low site index."""
    rng = np.random.default_rng(0)
    site_index = np.repeat(np.arange(NUM_SITES), PER_SITE)
    labels = {
        "beam": rng.integers(0, NUM_BEAMS, len(site_index)),
        "los": (rng.random(len(site_index)) < 0.8 - 0.2 * site_index).astype(np.int64),
    }
    return site_index, labels


def check_disjoint_and_complete(parts, n: int) -> None:
    pieces = [parts.global_test] + [p for c in parts.clients for p in (c.train, c.val, c.test)]
    everything = np.concatenate(pieces)
    assert len(everything) == n, "some row is in two places"
    assert np.array_equal(np.sort(everything), np.arange(n)), "some row is missing"
    for piece in pieces:
        assert piece.dtype.kind == "i"


@pytest.mark.parametrize("scheme", ["natural", "iid", "quantity", "dirichlet-0.5"])
def test_partitions_are_disjoint_and_complete(pooled, scheme):
    # Prepare
    site_index, labels = pooled
    cfg = PartitionConfig(scheme=scheme, num_clients=None if scheme == "natural" else 6, seed=3)

    # Execute
    parts = partition(site_index, labels, cfg)

    # Assert
    check_disjoint_and_complete(parts, len(site_index))
    assert len(parts.clients) == (NUM_SITES if scheme == "natural" else 6)
    for client in parts.clients:
        assert len(client.train) > 0 and len(client.val) > 0 and len(client.test) > 0
        assert len(client.train) > len(client.val)


def test_global_test_set_is_held_out_from_every_site(pooled):
    # Prepare
    site_index, labels = pooled

    # Execute
    parts = partition(site_index, labels, PartitionConfig(global_test_fraction=0.2))

    # Assert
    counts = np.bincount(site_index[parts.global_test], minlength=NUM_SITES)
    assert counts.tolist() == [50] * NUM_SITES


def test_natural_gives_one_client_per_site(pooled):
    # Prepare
    site_index, labels = pooled

    # Execute
    parts = partition(site_index, labels, PartitionConfig(scheme="natural"))

    # Assert
    for site, client in enumerate(parts.clients):
        assert np.all(site_index[client.all] == site)
        assert len(client.all) == PER_SITE - round(0.15 * PER_SITE)


def test_iid_and_quantity_clients_mix_all_sites(pooled):
    # Prepare
    site_index, labels = pooled

    for scheme in ("iid", "quantity"):
        # Execute
        parts = partition(site_index, labels, PartitionConfig(scheme=scheme, num_clients=5))

        # Assert: a random share, not whole sites cut out of the site-sorted rows
        for client in parts.clients:
            present = np.unique(site_index[client.all])
            assert present.tolist() == list(range(NUM_SITES)), scheme


def test_quantity_skew_gives_growing_client_sizes(pooled):
    # Prepare
    site_index, labels = pooled

    # Execute
    parts = partition(site_index, labels, PartitionConfig(scheme="quantity", num_clients=4))
    sizes = np.array([len(c.all) for c in parts.clients])

    # Assert: client i holds a share proportional to i + 1
    assert np.all(np.diff(sizes) > 0)
    np.testing.assert_allclose(sizes / sizes.sum(), np.arange(1, 5) / 10, atol=0.01)


def test_smaller_alpha_gives_more_label_skew(pooled):
    # Prepare
    site_index, labels = pooled
    skew = {}

    for alpha in (0.1, 1.0, 1000.0):
        # Execute
        cfg = PartitionConfig(scheme=f"dirichlet-{alpha}", num_clients=8, seed=1)
        parts = partition(site_index, labels, cfg)
        skew[alpha] = label_skew(label_histograms(labels["beam"], parts, NUM_BEAMS))

    # Assert
    assert skew[0.1] > skew[1.0] + 0.1
    assert skew[1.0] > skew[1000.0] + 0.1
    assert skew[0.1] > 0.5
    assert skew[1000.0] < 0.2


@pytest.mark.filterwarnings("ignore:The specified min_partition_size")
def test_dirichlet_can_skew_the_los_label(pooled):
    # Prepare
    site_index, labels = pooled
    cfg = PartitionConfig(scheme="dirichlet-0.1", num_clients=6, label="los", seed=2)
    iid = PartitionConfig(scheme="iid", num_clients=6, seed=2)

    # Execute
    skewed = label_skew(label_histograms(labels["los"], partition(site_index, labels, cfg), 2))
    mixed = label_skew(label_histograms(labels["los"], partition(site_index, labels, iid), 2))

    # Assert
    assert skewed > mixed + 0.15


def test_partition_is_deterministic_in_its_seed(pooled):
    # Prepare
    site_index, labels = pooled

    def clients(seed: int):
        cfg = PartitionConfig(scheme="dirichlet-0.3", num_clients=5, seed=seed)
        return [c.train for c in partition(site_index, labels, cfg).clients]

    # Execute
    first, again, other = clients(7), clients(7), clients(8)

    # Assert
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_label_skew_bounds():
    # Prepare
    same = np.array([[5, 5], [10, 10]])
    disjoint = np.array([[10, 0], [0, 10]])

    # Execute / Assert
    assert label_skew(same) == 0.0
    assert label_skew(disjoint) == pytest.approx(0.5)
    assert label_skew(10 * np.eye(4, dtype=np.int64)) == pytest.approx(0.75)


@pytest.mark.parametrize(
    "scheme",
    [
        "",
        "dirichlet",
        "dirichlet-",
        "dirichlet-0",
        "dirichlet--1",
        "dirichlet-abc",
        "dirichlet-inf",
        "dirichlet-nan",
        "Natural",
        "pathological-2",
        "dirichlet0.1",
    ],
)
def test_bad_scheme_strings_fail_with_the_valid_forms(scheme):
    # Prepare / Execute
    with pytest.raises(ValueError) as info:
        PartitionConfig(scheme=scheme)

    # Assert
    assert f"partition scheme {scheme!r} is invalid" in str(info.value)
    assert "dirichlet-<alpha>" in str(info.value)


def test_parse_scheme_accepts_valid_forms():
    # Prepare / Execute / Assert
    assert parse_scheme("natural") == ("natural", None)
    assert parse_scheme("dirichlet-0.05") == ("dirichlet", 0.05)
    assert parse_scheme("dirichlet-10") == ("dirichlet", 10.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"label": "snr"}, "partition label 'snr'"),
        ({"num_clients": -1}, "num_clients=-1"),
        ({"val_fraction": 0.6}, "val_fraction=0.6"),
        ({"global_test_fraction": -0.1}, "global_test_fraction"),
    ],
)
def test_bad_partition_config_values_fail(kwargs, match):
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match=match):
        PartitionConfig(**kwargs)


def test_impossible_requests_fail_clearly(pooled):
    # Prepare
    site_index, labels = pooled

    # Execute / Assert
    with pytest.raises(ValueError, match="one client per site"):
        partition(site_index, labels, PartitionConfig(scheme="natural", num_clients=3))
    with pytest.raises(ValueError, match="cannot be split into 400 clients"):
        partition(site_index, labels, PartitionConfig(scheme="iid", num_clients=400))
