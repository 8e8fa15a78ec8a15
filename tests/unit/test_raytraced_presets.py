"""Ray-traced sites in presets: schema, built-in presets, disjoint pretraining areas."""

from __future__ import annotations

import numpy as np
import pytest

from rantune.channels import cache_key
from rantune.channels.drops import polygon_contains
from rantune.config import RtSiteConfig
from rantune.errors import InputError
from rantune.presets import load_preset, parse_preset

RT_SITE = {
    "name": "a",
    "scenario": "rt",
    "scene": "munich",
    "num_samples": 10,
    "bs_position_m": [0.0, 0.0, 20.0],
    "ue_area": [-50.0, -50.0, 50.0, 50.0],
}


def test_rt_site_parses_with_rectangle_or_polygon_and_rejects_unknown_keys():
    # Prepare
    polygon = {**RT_SITE, "name": "b", "ue_area": [[0, 0], [40, 0], [40, 30], [0, 30]]}

    # Execute
    cfg = parse_preset({"sites": [RT_SITE, polygon]}, "inline")

    # Assert
    rect, poly = cfg.sites
    assert isinstance(rect, RtSiteConfig) and rect.ue_area == (
        (-50, -50),
        (50, -50),
        (50, 50),
        (-50, 50),
    )
    assert poly.ue_area == ((0, 0), (40, 0), (40, 30), (0, 30))
    assert cfg.site_hash(rect) != cfg.site_hash(poly)
    with pytest.raises(InputError, match=r"unknown key\(s\) \['distance_range_m'\]"):
        parse_preset({"sites": [{**RT_SITE, "distance_range_m": [10, 20]}]}, "inline")
    with pytest.raises(InputError, match="choose one of umi, uma, rma .* 'rt'"):
        parse_preset({"sites": [{**RT_SITE, "scenario": "ray"}]}, "inline")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"bs_position_m": [0.0, 0.0]}, "bs_position_m"),
        ({"bs_position_m": [0.0, 0.0, -3.0]}, "bs_position_m"),
        ({"antenna_pattern": "dipole"}, "antenna_pattern"),
        ({"max_depth": 9}, "max_depth"),
        ({"bs_downtilt_deg": 120}, "bs_downtilt_deg"),
        ({"scene": ""}, "scene"),
    ],
)
def test_rt_site_values_are_validated(overrides, field):
    with pytest.raises(InputError, match=f"a.{field}"):
        RtSiteConfig(**{**RT_SITE, **overrides})


def test_polygon_contains_includes_the_boundary_in_either_orientation():
    # Prepare
    square = ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0))
    points = np.array([[5, 5], [0, 5], [10, 10], [11, 5], [-1, -1]], dtype=float)

    # Execute
    ccw, cw = polygon_contains(square, points), polygon_contains(square[::-1], points)

    # Assert
    assert ccw.tolist() == cw.tolist() == [True, True, True, False, False]


def test_builtin_presets_mix_kinds_and_pretraining_areas_are_disjoint():
    # Prepare
    default, pretrain, smoke = (load_preset(n) for n in ("default", "pretrain", "rt-smoke"))

    # Execute
    rt = {
        name: [s for s in cfg.sites if s.scenario == "rt"]
        for name, cfg in (("default", default), ("pretrain", pretrain), ("rt-smoke", smoke))
    }

    # Assert
    assert len(smoke.sites) == 2 == len(rt["rt-smoke"])
    assert len({s.scene for s in rt["default"]}) >= 3
    assert {s.scenario for s in default.sites} - {"rt"}  # TR 38.901 stations too
    assert len(rt["pretrain"]) >= 3
    assert sum(s.num_samples for s in rt["default"]) <= 4000  # the demo's budget
    keys = [{cache_key(c, s) for s in c.sites} for c in (default, pretrain, smoke)]
    assert not keys[0] & keys[1] and not keys[0] & keys[2] and not keys[1] & keys[2]
    for pre in rt["pretrain"]:
        for site in (s for s in rt["default"] if s.scene == pre.scene):
            grid = np.stack(
                np.meshgrid(np.linspace(-600, 600, 241), np.linspace(-600, 600, 241)), -1
            )
            both = polygon_contains(pre.ue_area, grid.reshape(-1, 2)) & polygon_contains(
                site.ue_area, grid.reshape(-1, 2)
            )
            assert not both.any(), (pre.name, site.name)
