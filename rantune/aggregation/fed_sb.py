"""Fed-SB (LoRA-SB): clients train only an ``r x r`` matrix ``R`` between frozen, shared
``B`` and ``A`` (Singhal et al. 2025).

Per adapted module with scale ``s = alpha / r``::

    delta W = s * B R A        B [d_out, r], R [r, r], A [r, d_in]

``B`` and ``A`` are drawn once from a seed shared by every client and the server
(:func:`sb_bases`: seeded Gaussian matrices made orthonormal, so ``B R A`` moves the
weights within a fixed ``r x r`` subspace and ``||B R A||_F = ||R||_F``) and never
change. With the bases shared and fixed, plain averaging of ``R`` is exact::

    sum_i w_i s B R_i A = s B (sum_i w_i R_i) A

and the upload is ``r^2`` numbers per module (plus the head), whatever the number of
clients. In peft terms the model is ordinary LoRA with ``lora_A = A`` and
``lora_B = B R`` (:func:`expand`): server-side evaluation, the saved adapter and the
compression stage need nothing new; only a client's training step differs
(:mod:`rantune.lora_sb`). ``R`` travels as ``{prefix}.lora_R.weight``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from rantune.aggregation.init import generator
from rantune.aggregation.lora_keys import (
    State,
    a_key,
    as_tensor,
    b_key,
    is_lora_a,
    module_prefix,
)
from rantune.aggregation.update import ClientUpdate, example_weights, weighted_average_states
from rantune.errors import InputError

R_SUFFIX = ".lora_R.weight"


def r_key(prefix: str) -> str:
    return prefix + R_SUFFIX


def is_lora_r(key: str) -> bool:
    return key.endswith(R_SUFFIX)


def _orthonormal(rows: int, cols: int, gen: torch.Generator) -> Tensor:
    """``[rows, cols]`` float64 with orthonormal columns (QR of a Gaussian draw, the signs
    fixed by ``diag(R) > 0`` so the result is unique)."""
    q, r = torch.linalg.qr(torch.randn((rows, cols), generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, 1.0)


def sb_bases(prefix: str, d_in: int, d_out: int, rank: int, seed: int) -> tuple[Tensor, Tensor]:
    """The frozen ``(A [rank, d_in], B [d_out, rank])`` of one module, float32.

    ``A`` has orthonormal rows and ``B`` orthonormal columns; both are functions of
    ``(seed, prefix)`` only, bit-identical on every machine.
    """
    if not 1 <= rank <= min(d_in, d_out):
        raise InputError(
            f"Fed-SB rank {rank} is invalid for module {prefix} ({d_out} x {d_in}): expected "
            f"1 <= lora.r <= {min(d_in, d_out)}"
        )
    a = _orthonormal(d_in, rank, generator("fed-sb-A", seed, prefix)).T  # [rank, d_in]
    b = _orthonormal(d_out, rank, generator("fed-sb-B", seed, prefix))  # [d_out, rank]
    return a.to(torch.float32).contiguous(), b.to(torch.float32).contiguous()


def shapes_of(state: Mapping[str, Tensor]) -> dict[str, tuple[int, int, int]]:
    """``{prefix: (d_in, d_out, rank)}`` of the LoRA modules of a peft adapter state."""
    out = {}
    for key, value in state.items():
        if is_lora_a(key):
            prefix = module_prefix(key)
            rank, d_in = (int(s) for s in value.shape)
            out[prefix] = (d_in, int(state[b_key(prefix)].shape[0]), rank)
    return out


def zero_r(shapes: Mapping[str, tuple[int, int, int]]) -> State:
    """``{prefix}.lora_R.weight`` zeros ``[r, r]`` (the start: ``delta W = 0``)."""
    return {r_key(p): torch.zeros((r, r), dtype=torch.float32) for p, (_, _, r) in shapes.items()}


def expand(
    state: Mapping[str, Tensor], shapes: Mapping[str, tuple[int, int, int]], seed: int
) -> State:
    """A Fed-SB state (``lora_R`` + head) as the peft LoRA state it stands for.

    Parameters
    ----------
    state : ``{prefix}.lora_R.weight`` ``[r, r]`` per module and other (head) tensors.
    shapes : ``{prefix: (d_in, d_out, r)}`` (:func:`shapes_of` of the model's state).
    seed : the shared basis seed.

    Returns
    -------
    ``lora_A = A`` ``[r, d_in]`` and ``lora_B = B R`` ``[d_out, r]`` (float32) per
    module, the other tensors unchanged.
    """
    out: State = {}
    for key, value in state.items():
        if not is_lora_r(key):
            out[key] = as_tensor(value)
            continue
        prefix = key[: -len(R_SUFFIX)]
        if prefix not in shapes:
            raise InputError(f"{key}: the model does not adapt module {prefix!r}")
        d_in, d_out, rank = shapes[prefix]
        r = as_tensor(value).to(torch.float32)
        if tuple(r.shape) != (rank, rank):
            raise InputError(f"{key} has shape {tuple(r.shape)}, expected ({rank}, {rank})")
        a, b = sb_bases(prefix, d_in, d_out, rank, seed)
        out[a_key(prefix)] = a
        out[b_key(prefix)] = b @ r
    return out


def fed_sb_aggregate(updates: Sequence[ClientUpdate]) -> State:
    """Data-weighted mean of every ``R`` ``[r, r]`` and head tensor (exact, see above).

    Raises when an update carries ``lora_A``/``lora_B`` (the bases never travel).
    """
    for update in updates:
        leaked = [k for k in update.state if k.endswith((".lora_A.weight", ".lora_B.weight"))]
        if leaked:
            raise InputError(
                f"client {update.client_id!r} sent {leaked[:2]}: Fed-SB clients send only R "
                "(and the head); their A and B are the shared frozen bases"
            )
    return weighted_average_states([u.state for u in updates], example_weights(updates))
