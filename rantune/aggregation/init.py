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

from rantune.aggregation.lora_keys import State, a_key, b_key
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


def fresh_adapters(shapes: Mapping[str, tuple[int, int]], rank: int, seed: int) -> State:
    """Fresh adapters of ``rank`` per module: ``lora_A`` ``[rank, d_in]`` from
    :func:`seeded_lora_a` (seed ``seed``, the A key), ``lora_B`` ``[d_out, rank]`` zero.

    ``shapes``: ``{module prefix: (d_in, d_out)}``. Same arguments, same tensors on
    every machine (FLoRA's per-round re-initialisation).
    """
    out: State = {}
    for prefix, (d_in, d_out) in shapes.items():
        out[a_key(prefix)] = seeded_lora_a((rank, d_in), seed, a_key(prefix))
        out[b_key(prefix)] = torch.zeros((d_out, rank), dtype=torch.float32)
    return out
