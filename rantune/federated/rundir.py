"""The output directory of a federated run: config, history, checkpoints, final adapter.

Layout::

    OUT/config.json                      resolved config (nested) + "config-hash"
    OUT/history.json                     every completed round (see server/loop.py)
    OUT/global_adapter.safetensors       final global adapter + head (trainable_state keys)
    OUT/checkpoints/round_XXX.safetensors global adapter + head after round XXX (000 = init)
    OUT/checkpoints/round_XXX.strategy.safetensors  array-valued strategy state, if any
    OUT/checkpoints/round_XXX.json       the commit point: round record, strategy
                                         scalars, config hash, sha256 of the tensors

Every file is written atomically; a round counts as done only when its JSON exists
and the tensors match the checksums in it. Resuming checks the config hash first
and fails, writing nothing, when the directory holds a run of another config. A run
written before some config keys existed is resumed when the current config has those
keys at their defaults (``run_config.compatible_diff``); its config.json is kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save

from rantune.errors import InputError
from rantune.federated.run_config import RunConfig, compatible_diff
from rantune.fileio import atomic_write_bytes, atomic_write_json, sha256_file

FORMAT_VERSION = 1


def json_safe(value):
    """NaN/Inf -> None, numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _save_tensors(path: Path, tensors: dict[str, np.ndarray]) -> str:
    payload = save({k: np.ascontiguousarray(v) for k, v in sorted(tensors.items())})
    atomic_write_bytes(path, payload)
    return sha256_file(path)


@dataclass
class ResumePoint:
    """What a resumed run starts from: the last committed round and its state."""

    round: int
    global_state: dict[str, np.ndarray]
    strategy_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    strategy_meta: dict = field(default_factory=dict)
    rounds: list[dict] = field(default_factory=list)


class RunDir:
    """Reads and writes one run's output directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        # config hashes (besides the current config's) whose checkpoints may be resumed
        self.accepted_hashes: set[str] = set()
        self.checkpoints = self.root / "checkpoints"
        self.config_path = self.root / "config.json"
        self.history_path = self.root / "history.json"
        self.adapter_path = self.root / "global_adapter.safetensors"

    def round_paths(self, server_round: int) -> tuple[Path, Path, Path]:
        stem = self.checkpoints / f"round_{server_round:03d}"
        return (
            stem.with_suffix(".safetensors"),
            stem.with_name(stem.name + ".strategy.safetensors"),
            stem.with_suffix(".json"),
        )

    # ------------------------------------------------------------------ config
    def check_config(self, cfg: RunConfig) -> bool:
        """Whether OUT holds a run of this config (True) or nothing (False).

        Raises
        ------
        ValueError
            If OUT is a file, or holds a run of a different config (nothing is written).
        """
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"out-dir {self.root} is a file; give a directory path")
        if not self.config_path.exists():
            if self.checkpoints.exists() and any(self.checkpoints.glob("round_*.json")):
                raise InputError(
                    f"out-dir {self.root} has checkpoints but no config.json: it is not a "
                    "complete rantune run; use another out-dir"
                )
            return False
        try:
            stored = json.loads(self.config_path.read_text())
            flat = stored["flat"]
            stored_hash = stored["config-hash"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(
                f"out-dir {self.root} has an unreadable config.json ({err}); use another out-dir"
            ) from err
        if stored_hash != cfg.identity_hash():
            diff = compatible_diff(flat, cfg.flat_dict())
            if diff or not isinstance(flat, dict):
                raise InputError(
                    f"out-dir {self.root} holds a run with a different config (differs in "
                    f"{diff or 'the rantune version'}); nothing was overwritten: use another "
                    "out-dir or the same config to resume"
                )
            # written before some keys existed; they are at defaults that keep the numbers
            self.accepted_hashes.add(stored_hash)
        return True

    def write_config(self, cfg: RunConfig, extra: dict | None = None) -> None:
        payload = cfg.to_dict()
        payload["config-hash"] = cfg.identity_hash()
        payload["flat"] = cfg.flat_dict()
        payload["format-version"] = FORMAT_VERSION
        payload.update(extra or {})
        atomic_write_json(self.config_path, json_safe(payload))

    # ------------------------------------------------------------- checkpoints
    def save_round(
        self,
        cfg: RunConfig,
        server_round: int,
        global_state: dict[str, np.ndarray],
        record: dict,
        strategy_arrays: dict[str, np.ndarray] | None = None,
        strategy_meta: dict | None = None,
    ) -> None:
        """Write one round's checkpoint; the JSON (written last) commits it."""
        weights, strat_path, meta_path = self.round_paths(server_round)
        commit = {
            "round": server_round,
            "config-hash": cfg.identity_hash(),
            "format-version": FORMAT_VERSION,
            "sha256": _save_tensors(weights, global_state),
            "record": json_safe(record),
            "strategy-meta": json_safe(strategy_meta or {}),
        }
        if strategy_arrays:
            commit["strategy-sha256"] = _save_tensors(strat_path, strategy_arrays)
        atomic_write_json(meta_path, commit)

    def _load_round(self, cfg: RunConfig, server_round: int) -> tuple[dict, dict, dict] | None:
        weights, strat_path, meta_path = self.round_paths(server_round)
        try:
            commit = json.loads(meta_path.read_text())
            if commit.get("config-hash") not in {cfg.identity_hash(), *self.accepted_hashes}:
                raise InputError(
                    f"checkpoint {meta_path} belongs to another config; use another out-dir"
                )
            if sha256_file(weights) != commit["sha256"]:
                return None
            state = load_file(str(weights))
            arrays = {}
            if "strategy-sha256" in commit:
                if sha256_file(strat_path) != commit["strategy-sha256"]:
                    return None
                arrays = load_file(str(strat_path))
        except (OSError, KeyError, json.JSONDecodeError):
            return None
        return commit, state, arrays

    def resume_point(self, cfg: RunConfig) -> ResumePoint | None:
        """The last round whose checkpoint is complete and intact, with every round
        record before it; ``None`` if no round was committed."""
        rounds = sorted(
            int(p.stem.removeprefix("round_"))
            for p in self.checkpoints.glob("round_*.json")
            if p.stem.removeprefix("round_").isdigit()
        )
        records: dict[int, dict] = {}
        last = None
        for r in rounds:
            loaded = self._load_round(cfg, r)
            if loaded is None:
                break
            if r != (last[0] + 1 if last else 0):
                break
            records[r] = loaded[0]["record"]
            last = (r, loaded)
        if last is None:
            return None
        r, (commit, state, arrays) = last
        return ResumePoint(
            round=r,
            global_state=state,
            strategy_arrays=arrays,
            strategy_meta=commit.get("strategy-meta", {}),
            rounds=[records[i] for i in sorted(records)],
        )

    # ------------------------------------------------------------------ outputs
    def write_history(self, history: dict) -> None:
        atomic_write_json(self.history_path, json_safe(history))

    def write_adapter(
        self, global_state: dict[str, np.ndarray], metadata: dict | None = None
    ) -> None:
        payload = save(
            {k: np.ascontiguousarray(v) for k, v in sorted(global_state.items())},
            metadata={k: str(v) for k, v in (metadata or {}).items()},
        )
        atomic_write_bytes(self.adapter_path, payload)
