"""SuperNode ``--node-config`` strings: build them and check them before a launch.

The ClientApp reads ``partition-id`` and ``num-partitions`` (ints), an optional
``data-path`` (string: the node's own station data set, a directory with
``station.json`` + ``station.safetensors``) and the informational ``data-preset``
from ``context.node_config``. Flower parses ``--node-config`` as space-separated
``key=value`` pairs whose values are TOML (``partition-id=0 num-partitions=2
data-path="/data/bs-0"``); this module parses them the same way, so a bad string
fails here, with a hint, and not inside a SuperNode minutes later.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from rantune.errors import InputError

# Flower 1.41's pattern (flwr.common.config.parse_config_args).
_PAIR = re.compile(r"(\S+?)=(\'[^\']*\'|\"[^\"]*\"|\S+)")
_PRESET = re.compile(r"^[A-Za-z0-9_./-]+$")
_QUOTES = re.compile(r"[\"'\\]")

PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
DATA_PRESET = "data-preset"
DATA_PATH = "data-path"


def build_node_config(
    partition_id: int,
    num_partitions: int,
    preset: str | None = None,
    data_path: str | None = None,
) -> str:
    """Return the ``--node-config`` string of base station ``partition_id``.

    Parameters
    ----------
    partition_id : int
        Index of this SuperNode's partition, ``0 <= partition_id < num_partitions``.
    num_partitions : int
        Number of partitions (SuperNodes) in the federation.
    preset : str, optional
        Data preset name or path (letters, digits, ``_ . - /``), passed as ``data-preset``.
    data_path : str, optional
        The node's station directory, passed as ``data-path`` (no quotes or backslashes).

    Returns
    -------
    str
        e.g. ``'partition-id=0 num-partitions=2 data-preset="smoke"'``.
    """
    text = f"{PARTITION_ID}={int(partition_id)} {NUM_PARTITIONS}={int(num_partitions)}"
    if preset is not None:
        check_preset_name(preset)
        text += f' {DATA_PRESET}="{preset}"'
    if data_path is not None:
        if _QUOTES.search(data_path):
            raise InputError(
                f"data-path {data_path!r} contains a quote or backslash, which a node-config "
                "cannot carry; use a directory path without them"
            )
        text += f' {DATA_PATH}="{data_path}"'
    validate_node_config(text)
    return text


def check_preset_name(preset: str) -> None:
    """Fail unless ``preset`` can travel in a node-config (a name or a plain path)."""
    if not _PRESET.match(preset):
        raise InputError(
            f"invalid preset name {preset!r}; use letters, digits, '_', '.', '-', '/' "
            "(e.g. --preset smoke)"
        )


def parse_node_config(text: str) -> dict[str, Any]:
    """Parse a ``--node-config`` string as Flower 1.41 does.

    Raises
    ------
    ValueError
        If a pair is not ``key=value`` with a TOML value (quote strings).
    """
    pairs = _PAIR.findall(text)
    leftover = _PAIR.sub("", text).strip()
    if leftover:
        raise InputError(
            f"node-config {text!r}: cannot read {leftover!r}; write space-separated key=value "
            "pairs, e.g. 'partition-id=0 num-partitions=2 data-preset=\"smoke\"'"
        )
    try:
        return tomllib.loads("\n".join(f"{k} = {v}" for k, v in pairs))
    except tomllib.TOMLDecodeError as err:
        raise InputError(
            f"node-config {text!r} is not valid ({err}); values must be TOML: ints, floats, "
            'true/false, or quoted strings (data-preset="smoke")'
        ) from err


def validate_node_config(text: str, num_partitions: int | None = None) -> dict[str, Any]:
    """Check that a node-config names this node's partition.

    Parameters
    ----------
    text : str
        The ``--node-config`` string.
    num_partitions : int, optional
        If given, ``num-partitions`` must equal it (the number of SuperNodes).

    Returns
    -------
    dict
        The parsed values.

    Raises
    ------
    ValueError
        If ``partition-id``/``num-partitions`` is missing, not an int, or out
        of range, or ``data-preset`` is not a string.
    """
    values = parse_node_config(text)
    missing = [k for k in (PARTITION_ID, NUM_PARTITIONS) if k not in values]
    if missing:
        raise InputError(
            f"node-config {text!r} has no {' or '.join(missing)}; every SuperNode needs its base "
            "station's partition, e.g. 'partition-id=0 num-partitions=2'"
        )
    pid, num = values[PARTITION_ID], values[NUM_PARTITIONS]
    if type(pid) is not int or type(num) is not int:
        raise InputError(
            f"node-config {text!r}: partition-id and num-partitions must be integers "
            "(no quotes), e.g. 'partition-id=0 num-partitions=2'"
        )
    if num < 1 or not 0 <= pid < num:
        raise InputError(
            f"node-config {text!r}: need 0 <= partition-id < num-partitions and "
            f"num-partitions >= 1 (got partition-id={pid}, num-partitions={num})"
        )
    if num_partitions is not None and num != num_partitions:
        raise InputError(
            f"node-config {text!r}: num-partitions={num} but the federation has "
            f"{num_partitions} SuperNodes; make them equal"
        )
    if DATA_PRESET in values and not isinstance(values[DATA_PRESET], str):
        raise InputError(f'node-config {text!r}: data-preset must be a quoted string ("smoke")')
    if DATA_PATH in values and not isinstance(values[DATA_PATH], str):
        raise InputError(
            f'node-config {text!r}: data-path must be a quoted directory path ("/data/bs-0")'
        )
    return values


def check_partitions(configs: list[str]) -> list[dict[str, Any]]:
    """Validate a whole federation's node-configs: each partition exactly once.

    Raises
    ------
    ValueError
        If any config is invalid or two SuperNodes share a partition.
    """
    parsed = [validate_node_config(text, num_partitions=len(configs)) for text in configs]
    ids = sorted(p[PARTITION_ID] for p in parsed)
    if ids != list(range(len(configs))):
        raise InputError(
            f"node-configs give partition ids {ids}; each of 0..{len(configs) - 1} must appear "
            "exactly once (one SuperNode per base station)"
        )
    return parsed
