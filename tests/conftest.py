"""Shared fixtures: one channel cache per test session, the smoke preset, markers."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Tests never touch the user's cache unless CI set one explicitly.
    if "RANTUNE_CACHE" not in os.environ:
        cache = config.rootpath / ".pytest_cache" / "rantune-cache"
        os.environ["RANTUNE_CACHE"] = str(cache)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is visible to torch on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def smoke_cfg():
    from rantune.presets import load_preset

    return load_preset("smoke")


@pytest.fixture(scope="session")
def smoke_sites(smoke_cfg):
    """The smoke preset's three sites, generated once per session (cached on disk)."""
    from rantune.channels import load_sites

    return load_sites(smoke_cfg, progress=False)
