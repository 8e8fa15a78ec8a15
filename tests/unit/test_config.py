"""Site/radio/preset configuration: validation messages, presets, user files, [generate]."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from rantune.config import DataConfig, RadioConfig, SiteConfig
from rantune.errors import InputError
from rantune.presets import builtin_presets, load_preset, parse_preset

SITE = dict(name="s", scenario="umi", num_samples=10)

USER_PRESET = """
name = "my-network"
test_fraction = 0.2

[radio]
num_bs_antennas = 8
num_subcarriers = 12
num_beams = 4

[[sites]]
name = "downtown"
scenario = "umi"
num_samples = 50
distance_range_m = [10.0, 90.0]
seed = 3

[[sites]]
name = "highway"
scenario = "rma"
num_samples = 20
speed_range_mps = [20, 30]
"""


def write(tmp_path: Path, text: str, name: str = "preset.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- SiteConfig


@pytest.mark.parametrize(
    ("override", "field", "hint"),
    [
        ({"scenario": "indoor-hotspot"}, "s.scenario", "umi, uma, rma"),
        ({"scenario": "UMi"}, "s.scenario", "umi, uma, rma"),
        ({"num_samples": 0}, "s.num_samples", ">= 1"),
        ({"num_samples": -5}, "s.num_samples", ">= 1"),
        ({"num_samples": 2.5}, "s.num_samples", "integer"),
        ({"num_samples": True}, "s.num_samples", "integer"),
        ({"num_samples": "100"}, "s.num_samples", "integer"),
        ({"speed_range_mps": (5.0, 1.0)}, "s.speed_range_mps", "min <= max"),
        ({"speed_range_mps": (-1.0, 1.0)}, "s.speed_range_mps", "min <= max"),
        ({"speed_range_mps": (0.0, 1.0, 2.0)}, "s.speed_range_mps", "pair"),
        ({"speed_range_mps": 3.0}, "s.speed_range_mps", "pair"),
        ({"speed_range_mps": "0-3"}, "s.speed_range_mps", "pair"),
        ({"speed_range_mps": ("a", "b")}, "s.speed_range_mps", "pair"),
        ({"distance_range_m": (5.0, 100.0)}, "s.distance_range_m", "10.0 <= min"),
        ({"distance_range_m": (10.0, 6000.0)}, "s.distance_range_m", "5000.0"),
        ({"distance_range_m": (float("nan"), 100.0)}, "s.distance_range_m", "min <= max"),
        ({"snr_range_db": (10.0, 0.0)}, "s.snr_range_db", "min <= max"),
        ({"snr_range_db": (0.0, 100.0)}, "s.snr_range_db", "60.0"),
        ({"indoor_probability": 1.5}, "s.indoor_probability", "0..1"),
        ({"indoor_probability": -0.1}, "s.indoor_probability", "0..1"),
        ({"indoor_probability": "high"}, "s.indoor_probability", "0..1"),
        ({"seed": -1}, "s.seed", ">= 0"),
        ({"name": ""}, "name", "non-empty"),
    ],
)
def test_site_config_rejects_bad_values_naming_field_and_fix(override, field, hint):
    # Prepare
    values = {**SITE, **override}

    # Execute
    with pytest.raises(ValueError) as info:
        SiteConfig(**values)

    # Assert
    message = str(info.value)
    assert message.startswith(f"{field}="), message
    assert hint in message


def test_site_config_distance_limit_depends_on_scenario():
    # Prepare
    far = (35.0, 8000.0)

    # Execute
    rural = SiteConfig(**{**SITE, "scenario": "rma", "distance_range_m": far})

    # Assert: 8 km is valid for RMa (10 km limit) but not for UMa (5 km)
    assert rural.distance_range_m == far
    with pytest.raises(ValueError, match="5000"):
        SiteConfig(**{**SITE, "scenario": "uma", "distance_range_m": far})


def test_site_config_normalizes_lists_to_tuples_and_stays_frozen():
    # Prepare / Execute
    site = SiteConfig(**SITE, speed_range_mps=[1, 2], snr_range_db=[0.0, 5.0])

    # Assert
    assert site.speed_range_mps == (1, 2)
    assert isinstance(site.snr_range_db, tuple)
    with pytest.raises(AttributeError):
        site.num_samples = 3  # type: ignore[misc]


# ---------------------------------------------------------------- RadioConfig


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"num_beams": 0}, "num_beams"),
        ({"num_beams": -4}, "num_beams"),
        ({"num_bs_antennas": 0}, "num_bs_antennas"),
        ({"num_subcarriers": 0}, "num_subcarriers"),
        ({"num_subcarriers": -32}, "num_subcarriers"),
        ({"num_time_steps": -1}, "num_time_steps"),
        ({"num_time_steps": 1}, "num_time_steps"),
        ({"pilot_spacing": 0}, "pilot_spacing"),
        ({"pilot_spacing": 64}, "pilot_spacing"),
        ({"carrier_frequency_hz": 0.0}, "carrier_frequency_hz"),
        ({"carrier_frequency_hz": 3.5}, "carrier_frequency_hz"),
        ({"carrier_frequency_hz": "3.5 GHz"}, "carrier_frequency_hz"),
        ({"subcarrier_spacing_hz": 0.0}, "subcarrier_spacing_hz"),
        ({"subcarrier_spacing_hz": -15e3}, "subcarrier_spacing_hz"),
        ({"slot_duration_s": 0.0}, "slot_duration_s"),
    ],
)
def test_radio_config_rejects_bad_values(override, field):
    # Prepare / Execute
    with pytest.raises(ValueError) as info:
        RadioConfig(**override)

    # Assert: the message names the field and says what is expected
    message = str(info.value)
    assert message.startswith(f"{field}=")
    assert "invalid:" in message and len(message.split("invalid:")[1].strip()) > 3


def test_radio_config_defaults_are_valid_and_codebook_of_one_is_allowed():
    # Prepare / Execute
    radio = RadioConfig(num_beams=1, num_time_steps=2, pilot_spacing=32)

    # Assert
    assert (radio.num_bs_antennas, radio.num_subcarriers) == (16, 32)
    assert radio.num_beams == 1


# ---------------------------------------------------------------- DataConfig


def test_data_config_needs_unique_sites_and_a_sane_test_fraction():
    # Prepare
    radio = RadioConfig()
    site = SiteConfig(**SITE)

    # Execute / Assert
    with pytest.raises(ValueError, match="at least one"):
        DataConfig(name="p", radio=radio, sites=())
    with pytest.raises(ValueError, match="unique"):
        DataConfig(name="p", radio=radio, sites=(site, site))
    with pytest.raises(ValueError, match="test_fraction"):
        DataConfig(name="p", radio=radio, sites=(site,), test_fraction=0.7)


def test_config_hashes_track_data_relevant_fields_only():
    # Prepare
    cfg = DataConfig(name="p", radio=RadioConfig(), sites=(SiteConfig(**SITE),))
    renamed = replace(cfg, name="other-name")
    reseeded = cfg.with_seed(1)
    wider = replace(cfg, radio=replace(cfg.radio, num_subcarriers=64))

    # Execute
    hashes = [c.config_hash() for c in (cfg, renamed, reseeded, wider)]

    # Assert: the preset's name does not change the data; seed and geometry do
    assert hashes[0] == hashes[1]
    assert len({hashes[0], hashes[2], hashes[3]}) == 3
    assert cfg.site_hash(cfg.sites[0]) != reseeded.site_hash(reseeded.sites[0])
    assert cfg.with_seed(0) == cfg


def test_with_seed_offsets_every_site_and_rejects_negative_seeds():
    # Prepare
    cfg = load_preset("smoke")

    # Execute
    shifted = cfg.with_seed(2)

    # Assert
    assert [s.seed - 2000 for s in shifted.sites] == [s.seed for s in cfg.sites]
    with pytest.raises(ValueError, match="seed=-1 is invalid"):
        cfg.with_seed(-1)


# ---------------------------------------------------------------- presets


def test_every_builtin_preset_loads_and_matches_its_description():
    # Prepare
    names = builtin_presets()

    # Execute
    presets = {name: load_preset(name) for name in names}

    # Assert
    assert {"smoke", "default", "pretrain", "large"} <= set(names)
    assert 2 <= len(presets["smoke"].sites) <= 3
    assert len(presets["default"].sites) == 8
    assert {s.scenario for s in presets["default"].sites} == {"umi", "uma", "rma", "rt"}
    assert all(500 <= s.num_samples <= 2000 for s in presets["default"].sites)
    assert len(presets["large"].sites) >= 64
    for cfg in presets.values():
        assert len({s.seed for s in cfg.sites}) == len(cfg.sites), cfg.name


def test_default_and_pretrain_presets_share_no_site_data():
    # Prepare
    default, pretrain, smoke = (load_preset(n) for n in ("default", "pretrain", "smoke"))

    # Execute
    keys = [{c.site_hash(s) for s in c.sites} for c in (default, pretrain, smoke)]

    # Assert
    assert not keys[0] & keys[1] and not keys[0] & keys[2] and not keys[1] & keys[2]


def test_user_preset_file_loads(tmp_path):
    # Prepare
    path = write(tmp_path, USER_PRESET)

    # Execute
    cfg = load_preset(path)
    by_string = load_preset(str(path))

    # Assert
    assert cfg == by_string
    assert cfg.name == "my-network" and cfg.test_fraction == 0.2
    assert (cfg.radio.num_bs_antennas, cfg.radio.num_subcarriers, cfg.radio.num_beams) == (
        8,
        12,
        4,
    )
    assert [s.name for s in cfg.sites] == ["downtown", "highway"]
    assert cfg.sites[0].distance_range_m == (10.0, 90.0)
    assert cfg.sites[1].speed_range_mps == (20, 30)
    assert cfg.sites[1].seed == 0


def test_user_preset_name_defaults_to_file_stem(tmp_path):
    # Prepare
    path = write(tmp_path, USER_PRESET.replace('name = "my-network"', ""), "campus.toml")

    # Execute
    cfg = load_preset(path)

    # Assert
    assert cfg.name == "campus"


def test_generate_table_expands_templates_with_unique_names_and_seeds():
    # Prepare
    raw = {
        "radio": {"num_time_steps": 0},
        "sites": [{"name": "extra", "scenario": "uma", "num_samples": 7}],
        "generate": {
            "count": 5,
            "templates": [
                {"name": "a", "scenario": "umi", "num_samples": 10, "seed": 100},
                {"name": "b", "scenario": "rma", "num_samples": 20},
            ],
        },
    }

    # Execute
    cfg = parse_preset(raw, "gen.toml")

    # Assert
    names = [s.name for s in cfg.sites]
    assert names == ["extra", "a-000", "b-001", "a-002", "b-003", "a-004"]
    assert [s.scenario for s in cfg.sites[1:]] == ["umi", "rma", "umi", "rma", "umi"]
    assert [s.seed for s in cfg.sites[1:]] == [100, 1, 102, 3, 104]
    assert cfg.name == "gen"
    assert raw["generate"]["templates"][0]["name"] == "a"  # templates are not mutated


@pytest.mark.parametrize(
    ("generate", "match"),
    [
        ({"count": 0, "templates": [{"name": "a"}]}, "count >= 1"),
        ({"count": 3, "templates": []}, "at least one"),
        ({"count": 3}, "at least one"),
        ({"count": "3", "templates": [{"name": "a"}]}, "count >= 1"),
        ({"count": 3, "templates": [{"name": "a"}], "cuont": 4}, r"unknown key\(s\) \['cuont'\]"),
        ({"count": 2, "templates": [{"name": "a", "scenario": "umi", "seed": "x"}]}, "seed"),
        ({"count": 2, "templates": ["umi"]}, "generate.templates"),
    ],
)
def test_bad_generate_table_fails_clearly(generate, match):
    # Prepare
    raw = {"generate": generate}

    # Execute / Assert
    with pytest.raises(ValueError, match=match):
        parse_preset(raw, "gen.toml")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('nmae = "x"\n[[sites]]\nname="a"\nscenario="umi"\nnum_samples=5', r"\['nmae'\]"),
        (
            '[radio]\nnum_antennas=8\n[[sites]]\nname="a"\nscenario="umi"\nnum_samples=5',
            "num_antennas",
        ),
        ('[[sites]]\nname="a"\nscenario="umi"\nnum_samples=5\nspeed=3', r"\['speed'\]"),
        ('[[sites]]\nname="a"\nscenario="dense-urban"\nnum_samples=5', "a.scenario"),
        ('[[sites]]\nname="a"\nscenario="umi"\nnum_samples=0', "a.num_samples"),
        ('[radio]\nnum_beams=0\n[[sites]]\nname="a"\nscenario="umi"\nnum_samples=5', "num_beams"),
        ('[[sites]]\nname="a"\nscenario="umi"\nnum_samples=5\nspeed_range_mps=4', "pair"),
        ('radio = 3\n[[sites]]\nname="a"\nscenario="umi"\nnum_samples=5', r"\[radio\]"),
        ('sites = "umi"', "sites"),
        ('sites = ["umi"]', "expected a table"),
        ('name = "empty"', "at least one"),
        ("this is [not toml", "cannot read preset file"),
    ],
)
def test_bad_preset_file_raises_value_error_with_location(tmp_path, text, match):
    # Prepare
    path = write(tmp_path, text)

    # Execute
    with pytest.raises(ValueError, match=match) as info:
        load_preset(path)

    # Assert
    assert type(info.value) is InputError


def test_unknown_preset_name_lists_the_builtin_ones():
    # Prepare / Execute
    with pytest.raises(ValueError) as info:
        load_preset("no-such-preset")

    # Assert
    message = str(info.value)
    assert "'no-such-preset' not found" in message
    assert "smoke" in message and "default" in message


def test_unreadable_preset_files_raise_value_error(tmp_path):
    # Prepare
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    directory = tmp_path / "dir.toml"
    directory.mkdir()
    locked = write(tmp_path, USER_PRESET, "locked.toml")
    locked.chmod(0)

    # Execute / Assert
    for path in (binary, directory):
        with pytest.raises(ValueError, match=f"cannot read preset file {path}"):
            load_preset(path)
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(ValueError, match="cannot read preset file"):
            load_preset(locked)
    with pytest.raises(ValueError, match="not found"):
        load_preset(tmp_path / "missing.toml")
