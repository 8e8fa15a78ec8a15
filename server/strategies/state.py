"""Checkpointable strategy state: arrays to safetensors, scalars to JSON.

A strategy may define ``state_dict() -> (arrays, meta)`` and
``load_state_dict(arrays, meta)``; otherwise its instance attributes are captured
generically: ``ArrayRecord``, ``dict[str, ndarray]``, ``list[ndarray]`` and
``ndarray`` values as arrays, ``bool/int/float/str/None`` values as scalars (this
covers Flower's FedOpt family: ``current_arrays``, ``m_t``, ``v_t``,
``momentum_vector``). Functions and other objects are left alone.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

SCALARS = (bool, int, float, str, type(None))


def strategy_state(strategy) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, meta)`` capturing a strategy's mutable state."""
    if hasattr(strategy, "state_dict"):
        return strategy.state_dict()
    arrays: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    scalars: dict[str, object] = {}
    for name, value in vars(strategy).items():
        if isinstance(value, ArrayRecord):
            kinds[name] = "arrayrecord"
            arrays.update({f"{name}/{k}": v.numpy() for k, v in value.items()})
        elif isinstance(value, np.ndarray):
            kinds[name] = "ndarray"
            arrays[name] = value
        elif (
            isinstance(value, dict)
            and value
            and all(isinstance(v, np.ndarray) for v in value.values())
        ):
            kinds[name] = "dict"
            arrays.update({f"{name}/{k}": v for k, v in value.items()})
        elif isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value):
            kinds[name] = "list"
            arrays.update({f"{name}/{i}": v for i, v in enumerate(value)})
        elif isinstance(value, SCALARS):
            scalars[name] = value
    return arrays, {"kinds": kinds, "scalars": scalars}


def load_strategy_state(strategy, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Restore what :func:`strategy_state` captured."""
    if hasattr(strategy, "load_state_dict"):
        strategy.load_state_dict(arrays, meta)
        return
    for name, value in (meta.get("scalars") or {}).items():
        setattr(strategy, name, value)
    for name, kind in (meta.get("kinds") or {}).items():
        prefix = f"{name}/"
        parts = {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
        if kind == "ndarray":
            setattr(strategy, name, arrays[name])
        elif kind == "arrayrecord":
            setattr(
                strategy, name, ArrayRecord({k: Array(np.asarray(v)) for k, v in parts.items()})
            )
        elif kind == "dict":
            setattr(strategy, name, dict(parts))
        elif kind == "list":
            setattr(strategy, name, [parts[str(i)] for i in range(len(parts))])
