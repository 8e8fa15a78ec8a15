"""Channel data: 3GPP TR 38.901 channels from Sionna, cached per base station.

>>> from rantune.presets import load_preset
>>> from rantune.channels import load_sites
>>> sites = load_sites(load_preset("smoke"))      # generates once, then reloads
>>> sites[0]["csi"].shape                          # [N, antennas, subcarriers]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from rantune.channels.cache import CorruptCacheError, ShardCache, default_cache_root
from rantune.channels.dataset import ChannelDataset
from rantune.config import DataConfig

__all__ = [
    "ChannelDataset",
    "CorruptCacheError",
    "default_cache_root",
    "load_pooled",
    "load_sites",
]


def _generate(cfg: DataConfig, index: int, advance: Callable[[int], None] | None) -> ChannelDataset:
    from rantune.channels.sionna_generator import generate_site

    return generate_site(cfg.sites[index], cfg.radio, site_index=index, on_batch=advance)


def load_sites(
    cfg: DataConfig,
    cache_root: Path | str | None = None,
    rebuild: bool = False,
    progress: bool = True,
) -> list[ChannelDataset]:
    """Load every site of a preset from the cache, generating missing ones.

    Parameters
    ----------
    cfg : the preset.
    cache_root : cache directory (default ``$RANTUNE_CACHE`` or ``~/.cache/rantune``).
    rebuild : regenerate every site even when cached (replaces corrupt shards).
    progress : show a rich progress bar while generating.

    Returns
    -------
    list[ChannelDataset]
        One data set per site, in preset order, ``site_index`` set to that order.

    Raises
    ------
    CorruptCacheError
        If a cached shard fails its checksum (rerun with ``rebuild=True``).
    """
    import numpy as np

    cache = ShardCache(Path(cache_root) if cache_root is not None else None)
    keys = [cfg.site_hash(site) for site in cfg.sites]
    missing = [i for i, key in enumerate(keys) if rebuild or not cache.contains(key)]
    datasets: dict[int, ChannelDataset] = {}
    if missing:
        from rich.progress import Progress

        total = sum(cfg.sites[i].num_samples for i in missing)
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"Sionna TR 38.901: {len(missing)} site(s)", total=total)
            for i in missing:
                data = _generate(cfg, i, lambda n: bar.advance(task, n))
                info = {"radio": asdict(cfg.radio), "site": asdict(cfg.sites[i])}
                cache.save(keys[i], data, info)
                datasets[i] = data
    for i, key in enumerate(keys):
        if i not in datasets:
            data = cache.load(key)
            data.arrays["site_index"] = np.full(len(data), i, dtype=np.int64)
            datasets[i] = data
    return [datasets[i] for i in range(len(keys))]


def load_pooled(cfg: DataConfig, **kwargs) -> ChannelDataset:
    """All sites of a preset stacked into one data set (``site_index`` tells them apart)."""
    return ChannelDataset.concat(load_sites(cfg, **kwargs))
