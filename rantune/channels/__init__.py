"""Channel data per base station, cached: TR 38.901 (Sionna) or ray-traced (Sionna RT).

A preset's sites are either TR 38.901 stochastic drops (``scenario`` umi/uma/rma,
:mod:`rantune.channels.sionna_generator`) or ray-traced stations in a Sionna RT scene
(``scenario = "rt"``, :mod:`rantune.channels.raytraced`); both write the same fields.
A site with ``scenario = "import"`` is a user's own file or station directory
(:mod:`rantune.channels.importer`), loaded as it is, never generated or cached.

>>> from rantune.presets import load_preset
>>> from rantune.channels import load_sites
>>> sites = load_sites(load_preset("smoke"))      # generates once, then reloads
>>> sites[0]["csi"].shape                          # [N, antennas, subcarriers]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from rantune.channels.cache import CorruptCacheError, ShardCache, default_cache_root
from rantune.channels.dataset import ChannelDataset
from rantune.config import (
    IMPORT_SCENARIO,
    RT_SCENARIO,
    DataConfig,
    ImportSiteConfig,
    RtSiteConfig,
    SiteConfig,
)

__all__ = [
    "ChannelDataset",
    "CorruptCacheError",
    "cache_key",
    "default_cache_root",
    "load_pooled",
    "load_site_info",
    "load_sites",
    "site_kind",
]


def site_kind(site: SiteConfig | RtSiteConfig | ImportSiteConfig) -> str:
    """``"ray-traced"``, ``"imported"`` or ``"TR 38.901"``."""
    kinds = {RT_SCENARIO: "ray-traced", IMPORT_SCENARIO: "imported"}
    return kinds.get(site.scenario, "TR 38.901")


def cache_key(cfg: DataConfig, site: SiteConfig | RtSiteConfig) -> str:
    """Cache key of one site's shard.

    TR 38.901 sites: :meth:`DataConfig.site_hash`. Ray-traced sites add the hash of the
    scene's files and :data:`rantune.channels.raytraced.RT_GENERATOR_VERSION`, so an
    edited scene or changed generation code never reuses old shards. Resolving and
    hashing the scene reads files only; the ray tracer is not started.

    Raises
    ------
    InputError
        If a ray-traced site's scene is unknown or one of its files is missing.
    """
    if site.scenario != RT_SCENARIO:
        return cfg.site_hash(site)
    from rantune.channels.raytraced import RT_GENERATOR_VERSION
    from rantune.channels.scenes import resolve_scene, scene_digest

    scene = scene_digest(resolve_scene(site.scene, where=f"{site.name}.scene"))
    payload = json.dumps(
        {"site": cfg.site_hash(site), "scene": scene, "generator": RT_GENERATOR_VERSION}
    )
    return "rt-" + hashlib.sha256(payload.encode()).hexdigest()[:16]


def _generate(cfg: DataConfig, index: int, advance: Callable[[int], None] | None) -> ChannelDataset:
    from rantune.channels.sionna_generator import generate_site

    return generate_site(cfg.sites[index], cfg.radio, site_index=index, on_batch=advance)


def _generate_raytraced(
    cfg: DataConfig, index: int, advance: Callable[[int], None] | None
) -> tuple[ChannelDataset, dict]:
    from rantune.channels.raytraced import generate_rt_site
    from rantune.channels.scenes import resolve_scene

    site = cfg.sites[index]
    return generate_rt_site(
        site,
        cfg.radio,
        site_index=index,
        on_batch=advance,
        scene_path=resolve_scene(site.scene, where=f"{site.name}.scene"),
    )


def _align_fields(cfg: DataConfig, datasets: list[ChannelDataset]) -> None:
    """Give TR 38.901 sites the ray-traced-only fields (NaN) when a preset mixes kinds."""
    if not any(site.scenario == RT_SCENARIO for site in cfg.sites):
        return
    import numpy as np

    from rantune.channels.raytraced import RT_ONLY_FIELDS

    present = {name for data in datasets for name in RT_ONLY_FIELDS if name in data}
    for data in datasets:
        for name in present - set(data.arrays):
            width = 3 if name == "ut_position_scene" else None
            shape = (len(data),) if width is None else (len(data), width)
            data.arrays[name] = np.full(shape, np.nan, dtype=np.float32)


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
        One data set per site, in preset order, ``site_index`` set to that order. When
        the preset has ray-traced sites, TR 38.901 sites carry their extra fields as NaN.

    Raises
    ------
    CorruptCacheError
        If a cached shard fails its checksum (rerun with ``rebuild=True``).
    InputError
        For an unknown scene (before anything is generated), a BS inside a building, a
        UE area without coverage, or a ray tracer that cannot start; nothing is written
        for the failing site.
    """
    import numpy as np

    cache = ShardCache(Path(cache_root) if cache_root is not None else None)
    keys = [cache_key(cfg, site) for site in cfg.sites]
    datasets: dict[int, ChannelDataset] = {}
    for i, site in enumerate(cfg.sites):
        if site.scenario == IMPORT_SCENARIO:  # the user's file, checked before any generation
            from rantune.channels.importer import load_import_site

            datasets[i] = load_import_site(site, cfg.radio, i)
    missing = [
        i
        for i, key in enumerate(keys)
        if i not in datasets and (rebuild or not cache.contains(key))
    ]
    if missing:
        from rich.progress import Progress

        if any(cfg.sites[i].scenario == RT_SCENARIO for i in missing):
            from rantune.channels.scenes import start_ray_tracer

            start_ray_tracer()  # fails with the fix before any site is generated
        kinds = sorted({site_kind(cfg.sites[i]) for i in missing})
        total = sum(cfg.sites[i].num_samples for i in missing)
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"{' + '.join(kinds)}: {len(missing)} site(s)", total=total)
            for i in missing:
                bar.update(task, description=f"{site_kind(cfg.sites[i])}: {cfg.sites[i].name}")
                advance = lambda n: bar.advance(task, n)  # noqa: E731
                if cfg.sites[i].scenario == RT_SCENARIO:
                    data, generation = _generate_raytraced(cfg, i, advance)
                else:
                    data, generation = _generate(cfg, i, advance), {}
                info = {"radio": asdict(cfg.radio), "site": asdict(cfg.sites[i])}
                if generation:
                    info["generation"] = generation
                cache.save(keys[i], data, info)
                datasets[i] = data
    for i, key in enumerate(keys):
        if i not in datasets:
            data = cache.load(key)
            data.arrays["site_index"] = np.full(len(data), i, dtype=np.int64)
            datasets[i] = data
    ordered = [datasets[i] for i in range(len(keys))]
    _align_fields(cfg, ordered)
    return ordered


def load_site_info(cfg: DataConfig, cache_root: Path | str | None = None) -> list[dict]:
    """The cache metadata of each site (``generation`` holds ray-traced drop statistics).

    Call after :func:`load_sites`; a site without metadata gives an empty dict.
    """
    cache = ShardCache(Path(cache_root) if cache_root is not None else None)
    records = []
    for site in cfg.sites:
        _, meta = cache.paths(cache_key(cfg, site))
        records.append(json.loads(meta.read_text()) if meta.exists() else {})
    return records


def load_pooled(cfg: DataConfig, **kwargs) -> ChannelDataset:
    """All sites of a preset stacked into one data set (``site_index`` tells them apart)."""
    return ChannelDataset.concat(load_sites(cfg, **kwargs))
