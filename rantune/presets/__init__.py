"""Data presets: named TOML files listing base-station sites.

Built-in presets live beside this module (``smoke``, ``rt-smoke``, ``default``,
``pretrain``, ``large``). A user preset is any TOML file of the same form::

    name = "my-network"
    [radio]
    num_bs_antennas = 16
    num_subcarriers = 32
    [[sites]]
    name = "downtown"
    scenario = "umi"
    num_samples = 1000
    [[sites]]                      # a ray-traced base station (Sionna RT scene)
    name = "munich-east"
    scenario = "rt"
    scene = "munich"               # built-in scene name or path to a Mitsuba XML file
    num_samples = 500
    bs_position_m = [8.5, 21.0, 27.0]
    ue_area = [-60.0, -40.0, 80.0, 90.0]   # rectangle, or [[x, y], ...] polygon
    [[sites]]                      # a user's own channels (rantune.channels.importer)
    name = "measured"
    scenario = "import"
    path = "measured.npz"          # .npz/.h5/.mat or a `rantune data import` directory

``load_preset`` accepts a built-in name or a path to such a file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from rantune.config import (
    IMPORT_SCENARIO,
    RT_SCENARIO,
    SCENARIOS,
    DataConfig,
    ImportSiteConfig,
    RadioConfig,
    RtSiteConfig,
    SiteConfig,
    build_dataclass,
)
from rantune.errors import InputError

PRESET_DIR = Path(__file__).parent


def builtin_presets() -> list[str]:
    """Names of the presets shipped with rantune."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def _generated_sites(spec: dict, where: str) -> list[dict]:
    """Expand a ``[generate]`` table into many sites cycling through templates.

    ``[generate] count = 64`` with ``[[generate.templates]]`` entries makes ``count``
    sites named ``<template name>-<i>``, each with its own seed.
    """
    if not isinstance(spec, dict):
        raise InputError(f"{where}: [generate] must be a table with count and templates")
    unknown = sorted(set(spec) - {"count", "templates"})
    if unknown:
        raise InputError(
            f"{where}: unknown key(s) {unknown} in [generate]; valid: count, templates"
        )
    count = spec.get("count")
    templates = spec.get("templates", [])
    if (
        not isinstance(count, int)
        or isinstance(count, bool)
        or count < 1
        or not isinstance(templates, list)
        or not templates
        or not all(isinstance(t, dict) for t in templates)
    ):
        raise InputError(
            f"{where}: [generate] needs count >= 1 and at least one [[generate.templates]] table"
        )
    sites = []
    for i in range(count):
        template = dict(templates[i % len(templates)])
        seed = template.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise InputError(
                f"{where}: [[generate.templates]] seed={seed!r} is invalid: expected an integer >= 0"
            )
        template["name"] = f"{template.get('name', 'site')}-{i:03d}"
        template["seed"] = seed + i
        sites.append(template)
    return sites


def parse_preset(raw: dict, where: str) -> DataConfig:
    """Turn a parsed TOML document into a validated ``DataConfig``."""
    allowed = {"name", "description", "radio", "sites", "generate", "test_fraction"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise InputError(f"{where}: unknown top-level key(s) {unknown}; valid: {sorted(allowed)}")
    radio = build_dataclass(RadioConfig, raw.get("radio", {}), f"{where} [radio]")
    site_dicts = raw.get("sites", [])
    if not isinstance(site_dicts, list):
        raise InputError(f"{where}: 'sites' must be an array of [[sites]] tables")
    site_dicts = list(site_dicts)
    if "generate" in raw:
        site_dicts += _generated_sites(raw["generate"], where)
    sites = []
    for i, site in enumerate(site_dicts):
        scenario = site.get("scenario") if isinstance(site, dict) else None
        kinds = {RT_SCENARIO: RtSiteConfig, IMPORT_SCENARIO: ImportSiteConfig}
        if isinstance(site, dict) and scenario not in (*SCENARIOS, *kinds):
            raise InputError(
                f"{where} [[sites]] #{i}: {site.get('name')}.scenario={scenario!r} is invalid: "
                "choose one of "
                f"{', '.join(SCENARIOS)} (TR 38.901), {RT_SCENARIO!r} (ray-traced) or "
                f"{IMPORT_SCENARIO!r} (your own channels)"
            )
        cls = kinds.get(scenario, SiteConfig)
        if cls is ImportSiteConfig and isinstance(site.get("path"), str):
            # a relative path is relative to the preset file
            site = {**site, "path": str(Path(where).parent / Path(site["path"]).expanduser())}
        sites.append(build_dataclass(cls, site, f"{where} [[sites]] #{i}"))
    extra = {"test_fraction": raw["test_fraction"]} if "test_fraction" in raw else {}
    return DataConfig(
        name=str(raw.get("name", Path(where).stem)), radio=radio, sites=sites, **extra
    )


def load_preset(name_or_path: str | Path) -> DataConfig:
    """Load a built-in preset by name or a user preset from a TOML file.

    Raises
    ------
    ValueError
        If the name is unknown, the file cannot be read or parsed, or a value is invalid.
    """
    text_name = str(name_or_path)
    path = Path(text_name)
    if not path.suffix and (PRESET_DIR / f"{text_name}.toml").exists():
        path = PRESET_DIR / f"{text_name}.toml"
    if not path.exists():
        raise InputError(
            f"preset {text_name!r} not found: use one of {builtin_presets()} "
            "or the path to a preset .toml file"
        )
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise InputError(f"cannot read preset file {path}: {err}") from err
    return parse_preset(raw, str(path))
