"""Encoders that are not the shipped one, for the bring-your-own-encoder tests.

``build`` is a well-formed custom encoder (a 2-block gated token mixer with linears
``to_q``, ``to_v``, ``to_out`` and ``mix``, no attention, no ``blocks.N.attn``); the
other factories each break one rule of :class:`rantune.model.interface.Encoder`.
Entry points: ``custom_encoders:build`` (this folder is on ``sys.path`` under pytest)
or ``/path/to/tests/unit/custom_encoders.py:build``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rantune.errors import InputError


class GatedMixerBlock(nn.Module):
    """``x + to_out(mix(sigmoid(to_q(h)) * to_v(h)))`` with ``h = norm(x)``; ``mix`` mixes
    the ``P`` tokens (a linear over the token axis), the others the channels."""

    def __init__(self, d_model: int, num_tokens: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.to_q = nn.Linear(d_model, d_model)
        self.to_v = nn.Linear(d_model, d_model)
        self.mix = nn.Linear(num_tokens, num_tokens)
        self.to_out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)  # [B, P, d]
        gated = torch.sigmoid(self.to_q(h)) * self.to_v(h)  # [B, P, d]
        mixed = self.mix(gated.transpose(1, 2)).transpose(1, 2)  # [B, P, d]
        return x + self.to_out(mixed)  # [B, P, d]


class MixerEncoder(nn.Module):
    """Patches of ``patch = (pa, ps)`` over a fixed ``[A, S]`` input -> ``P`` tokens.

    ``forward``: ``[B, 2, A, S]`` -> ``(cls [B, d], tokens [B, P, d])``, ``cls`` the
    mean token through ``pool``.
    """

    def __init__(
        self,
        num_antennas: int,
        num_subcarriers: int,
        d_model: int = 16,
        patch: tuple[int, int] = (4, 8),
        num_blocks: int = 2,
    ) -> None:
        super().__init__()
        self.shape = (num_antennas, num_subcarriers)
        self.patch = patch
        self.d_model = d_model
        rows, cols = self.grid(num_antennas, num_subcarriers)
        self.embed = nn.Linear(2 * patch[0] * patch[1], d_model)
        self.layers = nn.ModuleList(
            GatedMixerBlock(d_model, rows * cols) for _ in range(num_blocks)
        )
        self.pool = nn.Linear(d_model, d_model)

    def grid(self, num_antennas: int, num_subcarriers: int) -> tuple[int, int]:
        if (num_antennas, num_subcarriers) != getattr(
            self, "shape", (num_antennas, num_subcarriers)
        ):
            raise InputError(f"MixerEncoder was built for {self.shape}, not the CSI shape given")
        pa, ps = self.patch
        if num_antennas % pa or num_subcarriers % ps:
            raise InputError(
                f"MixerEncoder patches {self.patch} do not tile {num_antennas}x{num_subcarriers}"
            )
        return num_antennas // pa, num_subcarriers // ps

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        batch, _, antennas, subcarriers = x.shape
        (pa, ps), (rows, cols) = self.patch, self.grid(antennas, subcarriers)
        x = x * (antennas * subcarriers) ** 0.5  # unit mean power per entry
        x = x.reshape(batch, 2, rows, pa, cols, ps).permute(
            0, 2, 4, 1, 3, 5
        )  # [B, r, c, 2, pa, ps]
        tokens = self.embed(x.reshape(batch, rows * cols, 2 * pa * ps))  # [B, P, d]
        for layer in self.layers:
            tokens = layer(tokens)
        return self.pool(tokens.mean(1)), tokens  # [B, d], [B, P, d]


def build(num_antennas: int, num_subcarriers: int) -> MixerEncoder:
    """The good encoder: LoRA targets ``to_q,to_v`` (or ``to_out``, ``mix``, ``embed``)."""
    return MixerEncoder(num_antennas, num_subcarriers)


def build_plain() -> nn.Module:
    """A factory without arguments (fixed to the smoke preset's 16 x 32 CSI)."""
    return MixerEncoder(16, 32, d_model=8, num_blocks=1)


def not_a_module(num_antennas: int, num_subcarriers: int) -> dict:
    return {"d_model": 16}


class _Flat(MixerEncoder):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        cls, tokens = super().forward(x)
        return cls, tokens.flatten(1)  # [B, P * d]: not the token layout


def wrong_shape(num_antennas: int, num_subcarriers: int) -> nn.Module:
    """Returns tokens ``[B, P * d]`` instead of ``[B, P, d]``."""
    return _Flat(num_antennas, num_subcarriers)


NOT_CALLABLE = 3
