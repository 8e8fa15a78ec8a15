"""Fed-SB on a base station: train only ``R`` ``[r, r]`` between the frozen shared bases.

peft has no LoRA-SB layer, and none is needed to *use* a Fed-SB model: it is ordinary
LoRA with ``lora_A = A`` and ``lora_B = B R`` (:func:`rantune.aggregation.fed_sb.expand`).
Only training differs: the gradient must reach ``R`` alone. :func:`only_r_trains`
swaps each adapted layer's ``lora_B`` module for an :class:`RCore` (``h -> B (R h)``,
``B`` a buffer, ``R`` the only parameter) for the duration of local training, then
puts the ``lora_B`` linear back with ``B R_trained`` as its weight, so the model is a
plain peft model again (evaluation, the model pool, other strategies).

Message side (server: :mod:`rantune.server.strategies.fed_sb`): ``R`` travels as
``{prefix}.lora_R.weight`` with the config key :data:`SB_SEED`; the client expands it
on arrival (:func:`expand_received`, called by :func:`rantune.federated.downlink.unpack`),
freezes ``lora_A``/``lora_B`` (:data:`FROZEN_BASES`) and sends back ``R`` + head.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rantune.aggregation.fed_sb import R_SUFFIX, expand, is_lora_r, sb_bases, shapes_of
from rantune.errors import InputError

SB_SEED = "fed-sb-seed"
"""Config key: the seed of the shared frozen bases (present only under Fed-SB)."""
FROZEN_BASES = r"\.lora_[AB]\.weight$"
"""Keys a Fed-SB client neither trains nor sends: the bases (``lora_B`` holds ``B R``)."""


class RCore(nn.Module):
    """Stands in for a LoRA layer's ``lora_B``: ``h [..., r] -> B (R h) [..., d_out]``.

    Parameters
    ----------
    basis : ``B`` ``[d_out, r]`` (a buffer: never trained).
    core : the starting ``R`` ``[r, r]`` (copied into the one trainable parameter).
    """

    def __init__(self, basis: Tensor, core: Tensor) -> None:
        super().__init__()
        self.register_buffer("basis", basis.detach().clone(), persistent=False)
        self.core = nn.Parameter(core.detach().clone().to(basis.dtype))

    def forward(self, h: Tensor) -> Tensor:
        return F.linear(F.linear(h, self.core), self.basis)  # [..., r] -> [..., r] -> [..., d_out]

    def product(self) -> Tensor:
        """``B R`` ``[d_out, r]``: the ``lora_B`` weight this core stands for."""
        return self.basis @ self.core.detach()


def expand_received(
    state: Mapping[str, np.ndarray], like: Mapping[str, np.ndarray], seed: int
) -> dict[str, np.ndarray]:
    """A received Fed-SB state (``lora_R`` + head) as the peft state it stands for.

    ``like``: this client's own adapter state (module shapes at its rank).
    """
    shapes = shapes_of({k: torch.from_numpy(np.asarray(v)) for k, v in like.items()})
    return {k: v.numpy() for k, v in expand(state, shapes, seed).items()}


@dataclass
class SbTraining:
    """What :func:`only_r_trains` leaves behind: ``R`` as received and as trained
    (``{prefix}.lora_R.weight`` -> ``[r, r]`` float32); both empty without Fed-SB."""

    received: dict[str, np.ndarray] = field(default_factory=dict)
    trained: dict[str, np.ndarray] = field(default_factory=dict)


def _lora_layer(model: nn.Module, prefix: str):
    try:
        layer = model.get_submodule(prefix)
    except AttributeError as err:
        raise InputError(f"Fed-SB: the model has no adapted module {prefix!r}") from err
    if not hasattr(layer, "lora_B") or len(layer.lora_B) != 1:
        raise InputError(f"Fed-SB: module {prefix!r} is not a LoRA layer with one adapter")
    return layer, next(iter(layer.lora_B))


@contextmanager
def only_r_trains(
    model: nn.Module, received: Mapping[str, np.ndarray], config: Mapping[str, object]
) -> Iterator[SbTraining]:
    """While inside, only each module's ``R`` (and whatever else is trainable, e.g. the
    head) trains; on exit the ``lora_B`` weights are ``B R_trained``.

    Parameters
    ----------
    model : a peft model whose ``lora_A``/``lora_B`` hold the expanded state (``A``,
        ``B R``), with ``lora_A`` frozen.
    received : the message's arrays (``R`` keys among them).
    config : the message's config; without :data:`SB_SEED` nothing changes.
    """
    session = SbTraining()
    if SB_SEED not in config:
        yield session
        return
    seed = int(config[SB_SEED])
    swapped = []
    for key, value in received.items():
        if not is_lora_r(key):
            continue
        prefix = key[: -len(R_SUFFIX)]
        layer, adapter = _lora_layer(model, prefix)
        linear = layer.lora_B[adapter]
        d_out, rank = (int(s) for s in linear.weight.shape)
        d_in = int(layer.lora_A[adapter].weight.shape[1])
        _, basis = sb_bases(prefix, d_in, d_out, rank, seed)
        core = RCore(basis.to(linear.weight.dtype), torch.from_numpy(np.asarray(value)))
        layer.lora_B[adapter] = core
        swapped.append((key, layer, adapter, linear, core))
        session.received[key] = np.array(value, dtype=np.float32, copy=True)
    try:
        yield session
    finally:
        for key, layer, adapter, linear, core in swapped:
            with torch.no_grad():
                linear.weight.copy_(core.product())
            layer.lora_B[adapter] = linear
            session.trained[key] = core.core.detach().numpy().astype(np.float32)
