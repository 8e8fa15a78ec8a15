"""Typed settings with one default, help text and validation each (as peft's ``LoraConfig``).

A *section* is a frozen dataclass whose fields are declared with :func:`setting`
(a run-config key: default, help, bounds or choices) or :func:`section` (a nested
section under a key prefix). The flat, dotted-kebab form that Flower reads from
``[tool.flwr.app.config]`` is derived from the dataclasses, never written twice:

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Lora:
...     r: int = setting(4, "adapter rank", low=1)
...     targets: tuple[str, ...] = setting(("q_proj",), "adapted projections")
>>> flat_defaults(Lora, "lora.")
{'lora.r': 4, 'lora.targets': 'q_proj'}
>>> read_section(Lora, {"lora.r": 8, "lora.targets": "q_proj,v_proj"}, "lora.")
Lora(r=8, targets=('q_proj', 'v_proj'))

Key of a field: ``prefix + kebab(field name)`` unless the setting names its own
``key``. Tuple fields travel as comma-separated strings. Fields declared with a
plain ``dataclasses.field`` (or a bare default) are not run-config keys. Every
failure raises :class:`rantune.errors.InputError` naming the key, the value and
what is expected.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from rantune.errors import InputError

Scalar = bool | int | float | str
_SETTING = "rantune.setting"
_SECTION = "rantune.section"


@dataclass(frozen=True)
class Setting:
    """What a run-config key accepts (stored in the field's metadata)."""

    help: str
    key: str | None = None
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself excluded
    identity: bool = True  # changes the numbers a run produces (resume compares these)


def setting(
    default: Any,
    help: str,
    *,
    key: str | None = None,
    choices: tuple[str, ...] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    identity: bool = True,
) -> Any:
    """A dataclass field that is a run-config key (see the module docstring)."""
    meta = Setting(help, key, choices, low, high, low_open, identity)
    return dataclasses.field(default=default, metadata={_SETTING: meta})


def section(cls: type, prefix: str) -> Any:
    """A dataclass field holding the nested section ``cls`` under ``prefix`` (e.g. ``"dp."``)."""
    return dataclasses.field(default_factory=cls, metadata={_SECTION: prefix})


@dataclass(frozen=True)
class Key:
    """One flat key of a schema: where it lives and what it accepts."""

    key: str
    path: tuple[str, ...]  # attribute path from the root section
    type: Any
    default: Any
    setting: Setting
    scope: str = "run config"  # how error messages name where the key lives


def kebab(name: str) -> str:
    return name.replace("_", "-")


@cache
def keys_of(cls: type, prefix: str = "") -> tuple[Key, ...]:
    """Every run-config key of ``cls`` and its nested sections, in declaration order."""
    hints = typing.get_type_hints(cls)
    found: list[Key] = []
    for f in dataclasses.fields(cls):
        if _SECTION in f.metadata:
            for sub in keys_of(hints[f.name], prefix + f.metadata[_SECTION]):
                found.append(dataclasses.replace(sub, path=(f.name, *sub.path)))
        elif _SETTING in f.metadata:
            meta: Setting = f.metadata[_SETTING]
            key = meta.key or prefix + kebab(f.name)
            found.append(Key(key, (f.name,), hints[f.name], f.default, meta))
    return tuple(found)


def _is_tuple(kind: Any) -> bool:
    return typing.get_origin(kind) is tuple


def to_flat_value(kind: Any, value: Any) -> Scalar:
    """A typed value in its flat (Flower run-config) form."""
    if _is_tuple(kind):
        return ",".join(str(v) for v in value)
    return value


def flat_defaults(cls: type, prefix: str = "") -> dict[str, Scalar]:
    """``{flat key: default}`` of a section tree."""
    return {k.key: to_flat_value(k.type, k.default) for k in keys_of(cls, prefix)}


def to_flat(obj: Any, prefix: str = "") -> dict[str, Scalar]:
    """``{flat key: value}`` of a section instance (the inverse of :func:`read_section`)."""
    out = {}
    for k in keys_of(type(obj), prefix):
        value = obj
        for name in k.path:
            value = getattr(value, name)
        out[k.key] = to_flat_value(k.type, value)
    return out


def _fail(k: Key, value: object, hint: str) -> typing.NoReturn:
    where = f"{k.scope} {k.key}" if k.scope else k.key
    raise InputError(f"{where}={value!r} is invalid: {hint}")


def _range_text(s: Setting, integer: bool) -> str:
    """``an integer >= 1``, ``a number > 0``, ``0 <= value <= 1``."""
    low_op = ">" if s.low_open else ">="
    if s.low is not None and s.high is not None:
        return f"{s.low:g} {'<' if s.low_open else '<='} value <= {s.high:g}"
    noun = "an integer" if integer else "a number"
    if s.low is not None:
        return f"{noun} {low_op} {s.low:g}"
    return f"{noun} <= {s.high:g}"


def _number(k: Key, value: object, integer: bool) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(k, value, "expected an integer" if integer else "expected a number")
    if integer:
        if isinstance(value, float):
            if not value.is_integer():
                _fail(k, value, "expected an integer")
            value = int(value)
    else:
        value = float(value)
    if not math.isfinite(value):
        _fail(k, value, "expected a finite number")
    s = k.setting
    below = s.low is not None and (value <= s.low if s.low_open else value < s.low)
    above = s.high is not None and value > s.high
    if below or above:
        _fail(k, value, "expected " + _range_text(s, integer))
    return value


def _item(k: Key, kind: Any, text: str) -> Any:
    if kind is int:
        if not text.lstrip("-").isdigit():
            _fail(k, text, "not an integer (write comma-separated integers, e.g. 4,8,16)")
        return _number(k, int(text), integer=True)
    return text


def parse_value(k: Key, value: object) -> Any:
    """Check and convert one flat value to the field's type."""
    kind, s = k.type, k.setting
    if _is_tuple(kind):
        if not isinstance(value, str):
            _fail(k, value, 'expected a comma-separated string (quote it: key="a,b")')
        item_type = typing.get_args(kind)[0]
        items = tuple(_item(k, item_type, p.strip()) for p in value.split(",") if p.strip())
        unknown = [i for i in items if s.choices is not None and i not in s.choices]
        if unknown:
            _fail(k, value, f"{unknown} not among {', '.join(s.choices)}")
        return items
    if kind is bool:
        if not isinstance(value, bool):
            _fail(k, value, "expected true or false")
        return value
    if kind is str:
        if not isinstance(value, str):
            _fail(k, value, 'expected a string (quote it: key="value")')
        if s.choices is not None and value not in s.choices:
            _fail(k, value, f"choose one of {', '.join(s.choices)}")
        return value
    if kind is int:
        return _number(k, value, integer=True)
    if kind is float:
        return _number(k, value, integer=False)
    if kind == int | float:  # an integer count or a real share, kept as given
        return _number(k, value, integer=isinstance(value, int) and not isinstance(value, bool))
    raise TypeError(f"schema field {k.key} has unsupported type {kind!r}")


def read_section(cls: type, raw: Mapping[str, Scalar], prefix: str = "") -> Any:
    """Build ``cls`` (and its nested sections) from flat keys; absent keys take defaults."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if _SECTION in f.metadata:
            kwargs[f.name] = read_section(hints[f.name], raw, prefix + f.metadata[_SECTION])
        elif _SETTING in f.metadata:
            k = next(k for k in keys_of(cls, prefix) if k.path == (f.name,))
            if k.key in raw:
                kwargs[f.name] = parse_value(k, raw[k.key])
    return cls(**kwargs)


def check_settings(obj: Any, scope: str = "", prefix: str = "") -> None:
    """Validate the setting fields of a section instance built in Python (bounds, choices,
    types), with messages naming ``scope`` and ``prefix + field`` (e.g. ``"training"``,
    ``"model."``); call it from ``__post_init__``. Nested sections check themselves."""
    for k in keys_of(type(obj)):
        if len(k.path) == 1:
            value = to_flat_value(k.type, getattr(obj, k.path[0]))
            parse_value(dataclasses.replace(k, key=prefix + k.path[0], scope=scope), value)


def check_known(cls: type, raw: Mapping[str, Scalar], *, require_all: bool) -> None:
    """Fail on keys the schema does not know (and, with ``require_all``, on missing ones)."""
    known = {k.key for k in keys_of(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(
            f"unknown run config key(s) {unknown}; valid keys are {sorted(known)} "
            "(`rantune simulate --list-keys` prints them with their help)"
        )
    missing = sorted(known - set(raw)) if require_all else []
    if missing:
        raise InputError(
            f"run config is missing key(s) {missing}: add them to [tool.flwr.app.config] "
            "in pyproject.toml (their defaults: rantune.federated.run_config.DEFAULTS)"
        )
    for key, value in raw.items():
        if not isinstance(value, bool | int | float | str):
            raise InputError(
                f"run config {key}={value!r} is invalid: values must be bool, int, float or str"
            )


def describe(cls: type) -> Iterator[tuple[str, Scalar, str]]:
    """``(key, default, help)`` rows of a schema, for ``--help`` texts and docs."""
    for k in keys_of(cls):
        yield k.key, to_flat_value(k.type, k.default), k.setting.help


def non_identity_keys(cls: type) -> tuple[str, ...]:
    """Keys that do not change a run's numbers (``identity=False``)."""
    return tuple(k.key for k in keys_of(cls) if not k.setting.identity)

