"""Encoder checkpoints: safetensors weights plus a JSON model card.

The shipped checkpoint lives in ``rantune/checkpoints/<name>.safetensors`` with its
card ``<name>.json``; :func:`load_pretrained` reads it offline (nothing is ever
downloaded).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

from rantune.errors import InputError
from rantune.fileio import atomic_write_json, sha256_file
from rantune.model.config import ModelConfig
from rantune.model.encoder import ChannelEncoder

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


def save_checkpoint(encoder: ChannelEncoder, path: Path | str, card: dict | None = None) -> None:
    """Write ``path`` (.safetensors) and its card (.json) atomically.

    The card always records ``model_config`` and the weights' ``sha256``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        state = {k: v.detach().contiguous() for k, v in encoder.state_dict().items()}
        save_file(state, tmp)
        digest = sha256_file(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    full_card = dict(card or {})
    full_card["model_config"] = encoder.config.to_dict()
    full_card["sha256"] = digest
    atomic_write_json(path.with_suffix(".json"), full_card)


def load_checkpoint(
    path: Path | str, expect: ModelConfig | None = None
) -> tuple[ChannelEncoder, dict]:
    """Load an encoder and its card.

    Raises
    ------
    InputError
        If the weights or the card are missing, if the weights fail their checksum or do not match the card's (or ``expect``'s)
        model config.
    """
    path = Path(path)
    card_path = path.with_suffix(".json")
    if not path.exists() or not card_path.exists():
        raise InputError(f"checkpoint {path} (and its card {card_path.name}) not found")
    card = json.loads(card_path.read_text())
    cfg = ModelConfig(**card["model_config"])
    if expect is not None and expect != cfg:
        raise InputError(
            f"checkpoint {path} holds model config {cfg}, not the expected {expect}; "
            "pick the checkpoint made for this model size"
        )
    if "sha256" in card and sha256_file(path) != card["sha256"]:
        raise InputError(f"checkpoint {path} does not match the sha256 in its card: file corrupted")
    encoder = ChannelEncoder(cfg)
    state = load_file(str(path))
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise InputError(f"checkpoint {path} does not fit its model config: {err}") from err
    return encoder, card


def load_pretrained(name: str = "tiny") -> ChannelEncoder:
    """The pretrained encoder shipped with rantune (offline).

    Parameters
    ----------
    name : shipped checkpoint name (``tiny``).
    """
    path = SHIPPED_DIR / f"{name}.safetensors"
    if not path.exists():
        shipped = sorted(
            p.stem for p in SHIPPED_DIR.glob("*.safetensors") if p.with_suffix(".json").exists()
        )
        raise InputError(
            f"no shipped checkpoint named {name!r}; available: {shipped or 'none'} "
            "(make one with `rantune pretrain`)"
        )
    encoder, _ = load_checkpoint(path)
    encoder.eval()
    return encoder


def shipped_card(name: str = "tiny") -> dict:
    """The model card of a shipped checkpoint."""
    return json.loads((SHIPPED_DIR / f"{name}.json").read_text())

