"""The encoder contract: what task heads, LoRA, federation and export need of an encoder.

Every encoder rantune fine-tunes, the shipped :class:`~rantune.model.ChannelEncoder`
and any user architecture loaded from ``model.encoder`` alike
(:mod:`rantune.model.custom`), is an ``nn.Module`` that meets :class:`Encoder`:

- ``d_model`` (attribute or property, ``int >= 1``): the width of its outputs;
- ``grid(num_antennas, num_subcarriers) -> (rows, cols)``: the token grid it produces
  for CSI of that shape (``rows`` divides ``A``, ``cols`` divides ``S``); it raises
  :class:`~rantune.errors.InputError` for a shape it cannot encode;
- ``forward(x)``: ``x`` float32 ``[B, 2, A, S]`` (real, imaginary; unit Frobenius
  norm per sample, as ``rantune.channels`` stores CSI) -> ``(cls [B, d_model],
  tokens [B, rows * cols, d_model])``. Token ``i * cols + j`` summarises antennas
  ``[i * A / rows, (i + 1) * A / rows)`` and subcarriers ``[j * S / cols, (j + 1) * S /
  cols)`` (row-major, as the shipped encoder's patches); the CSI-prediction head maps
  each token back to its patch;
- LoRA targets: ``nn.Linear`` (or ``Conv1d/Conv2d/Embedding``) submodules whose names
  ``lora.targets`` lists (peft matches a name or its dotted suffix).

Heads never see the encoder itself, only its :class:`TokenLayout`, so one code path
builds every task model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor

from rantune.errors import InputError


@runtime_checkable
class Encoder(Protocol):
    """An encoder rantune can fine-tune (see the module docstring for the contract)."""

    d_model: int

    def grid(self, num_antennas: int, num_subcarriers: int) -> tuple[int, int]:
        """Token grid ``(rows, cols)`` for CSI ``[A, S]``; InputError if unencodable."""
        ...

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, 2, A, S]`` -> ``(cls [B, d_model], tokens [B, rows * cols, d_model])``."""
        ...


@dataclass(frozen=True)
class TokenLayout:
    """What a task head knows of the encoder's output for one CSI shape.

    Attributes
    ----------
    d_model : token width.
    patch_antennas, patch_subcarriers : the (antenna, subcarrier) extent of one token
        (``A / rows``, ``S / cols``).
    """

    d_model: int
    patch_antennas: int
    patch_subcarriers: int

    @property
    def patch_dim(self) -> int:
        """Real values per token's patch: 2 (re, im) x patch_antennas x patch_subcarriers."""
        return 2 * self.patch_antennas * self.patch_subcarriers


def token_layout(encoder: Encoder, num_antennas: int, num_subcarriers: int) -> TokenLayout:
    """The :class:`TokenLayout` of ``encoder`` on CSI ``[A, S]``.

    Raises
    ------
    InputError
        If ``d_model`` is not a positive integer, or ``grid`` gives a grid that does not
        divide ``(A, S)`` (or the encoder's own ``grid`` refuses the shape).
    """
    name = type(encoder).__name__
    d_model = getattr(encoder, "d_model", None)
    if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < 1:
        raise InputError(
            f"encoder {name} has d_model={d_model!r}: an encoder must expose its token width "
            "as an integer attribute or property d_model >= 1"
        )
    grid = getattr(encoder, "grid", None)
    if not callable(grid):
        raise InputError(
            f"encoder {name} has no grid(num_antennas, num_subcarriers) method: it must say "
            "which (rows, cols) token grid it makes of a CSI shape"
        )
    result = grid(num_antennas, num_subcarriers)
    if (
        not isinstance(result, tuple | list)
        or len(result) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in result)
    ):
        raise InputError(
            f"encoder {name}.grid({num_antennas}, {num_subcarriers}) returned {result!r}: "
            "expected a (rows, cols) pair of positive integers"
        )
    rows, cols = result
    if num_antennas % rows or num_subcarriers % cols:
        raise InputError(
            f"encoder {name}.grid({num_antennas}, {num_subcarriers}) = ({rows}, {cols}) does "
            "not divide the CSI shape: rows must divide the antennas and cols the subcarriers"
        )
    return TokenLayout(d_model, num_antennas // rows, num_subcarriers // cols)
