"""Deterministic adapter initialisation and seed derivation.

peft initialises ``lora_A`` with ``kaiming_uniform_(a=sqrt(5))``, i.e. uniform on
``[-1/sqrt(d_in), 1/sqrt(d_in)]``, and ``lora_B`` with zeros. The functions here draw
the same distribution from a generator seeded by ``(seed, key)`` so every client
(and the server) produces bit-identical tensors without exchanging them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from rantune.aggregation.lora_keys import State, is_lora_a, is_lora_b
from rantune.errors import InputError
from rantune.seeding import derive_seed


def generator(*parts: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(*parts)``."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(derive_seed(*parts))
    return gen


def seeded_lora_a(
    shape: tuple[int, int], seed: int, key: str, dtype: torch.dtype = torch.float32
) -> Tensor:
    """peft's ``lora_A`` init, deterministic in ``(seed, key)``.

    Parameters
    ----------
    shape : ``(r, d_in)``.
    seed : run seed (same on every client).
    key : the state key (``...q_proj.lora_A.weight``); different modules get different draws.

    Returns
    -------
    ``[r, d_in]`` tensor, uniform on ``[-1/sqrt(d_in), 1/sqrt(d_in)]``.
    """
    rows, d_in = (int(s) for s in shape)
    if rows < 1 or d_in < 1:
        raise InputError(f"lora_A shape {tuple(shape)} is invalid: expected (r >= 1, d_in >= 1)")
    bound = 1.0 / math.sqrt(d_in)
    draw = torch.rand((rows, d_in), generator=generator("lora_A", seed, key), dtype=torch.float64)
    return ((2.0 * draw - 1.0) * bound).to(dtype)


def fresh_adapters(like: Mapping[str, Tensor], seed: int, salt: object = None) -> State:
    """New adapters shaped like ``like``: seeded ``lora_A`` (see :func:`seeded_lora_a`), zero ``lora_B``.

    Non-adapter tensors (head) are copied unchanged. ``salt`` (e.g. the round and
    client id) varies the draw between re-initialisations while staying reproducible.
    """
    out: State = {}
    for key, value in like.items():
        if is_lora_a(key):
            out[key] = seeded_lora_a(
                tuple(value.shape),
                seed if salt is None else derive_seed(seed, salt),
                key,
                value.dtype,
            )
        elif is_lora_b(key):
            out[key] = torch.zeros_like(value)
        else:
            out[key] = value.detach().clone()
    return out
