"""Channel transformer encoder over 2-D (antenna x subcarrier) CSI patches.

Attention is written with explicit ``q_proj/k_proj/v_proj/o_proj`` linears and
``scaled_dot_product_attention`` so LoRA can target each projection by name,
heads can be pruned by slicing rows/columns, and ONNX export is clean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rantune.errors import InputError
from rantune.model.config import ModelConfig


def csi_to_real(csi) -> Tensor:
    """Complex CSI ``[..., A, S]`` (numpy or torch) -> float32 ``[..., 2, A, S]``."""
    tensor = torch.as_tensor(csi)
    return torch.stack([tensor.real, tensor.imag], dim=-3).to(torch.float32)


def real_to_csi(x: Tensor) -> Tensor:
    """Float ``[..., 2, A, S]`` -> complex64 ``[..., A, S]``."""
    return torch.complex(x[..., 0, :, :], x[..., 1, :, :])


class Attention(nn.Module):
    """Multi-head self-attention with named projections.

    ``q_proj``, ``k_proj``, ``v_proj``: ``[num_heads * head_dim, d_model]`` weights;
    ``o_proj``: ``[d_model, num_heads * head_dim]``. ``num_heads`` may shrink after
    head pruning while ``head_dim`` stays fixed.
    """

    def __init__(self, d_model: int, num_heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(d_model, inner)
        self.k_proj = nn.Linear(d_model, inner)
        self.v_proj = nn.Linear(d_model, inner)
        self.o_proj = nn.Linear(inner, d_model)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[B, L, d_model]`` -> ``[B, L, d_model]``."""
        batch, length, _ = x.shape
        shape = (batch, length, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)  # [B, H, L, hd]
        k = self.k_proj(x).view(shape).transpose(1, 2)  # [B, H, L, hd]
        v = self.v_proj(x).view(shape).transpose(1, 2)  # [B, H, L, hd]
        p = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # [B, H, L, hd]
        merged = attended.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return self.o_proj(merged)  # [B, L, d_model]


class FeedForward(nn.Module):
    """``fc1`` ``[ffn_dim, d_model]`` -> GELU -> ``fc2`` ``[d_model, ffn_dim]``."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))  # [B, L, d]
        return x + self.drop(self.ffn(self.norm2(x)))  # [B, L, d]


class ChannelEncoder(nn.Module):
    """Transformer encoder of CSI.

    Input ``x``: float32 ``[B, 2, A, S]`` (real, imag) with ``A`` divisible by
    ``patch_antennas`` and ``S`` by ``patch_subcarriers``. Tokens: one CLS token plus
    ``P = (A / pa) * (S / ps)`` patch tokens with factorized 2-D positions, so one
    set of weights serves every (A, S) up to the ``max_grid`` limits.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.patch_embed = nn.Linear(cfg.patch_dim, cfg.d_model)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.row_embed = nn.Parameter(torch.randn(cfg.max_grid_rows, cfg.d_model) * 0.02)
        self.col_embed = nn.Parameter(torch.randn(cfg.max_grid_cols, cfg.d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.d_model)

    @property
    def d_model(self) -> int:
        """Token width (the :class:`rantune.model.interface.Encoder` contract)."""
        return self.config.d_model

    def grid(self, num_antennas: int, num_subcarriers: int) -> tuple[int, int]:
        """Patch grid ``(rows, cols)`` for a CSI shape; raises ``ValueError`` if unpatchable."""
        cfg = self.config
        if num_antennas % cfg.patch_antennas or num_subcarriers % cfg.patch_subcarriers:
            raise InputError(
                f"CSI shape ({num_antennas} antennas, {num_subcarriers} subcarriers) cannot be cut "
                f"into {cfg.patch_antennas}x{cfg.patch_subcarriers} patches: use multiples of "
                "the patch size"
            )
        rows, cols = num_antennas // cfg.patch_antennas, num_subcarriers // cfg.patch_subcarriers
        if rows > cfg.max_grid_rows or cols > cfg.max_grid_cols:
            raise InputError(
                f"CSI shape ({num_antennas}, {num_subcarriers}) exceeds the model's maximum "
                f"({cfg.max_grid_rows * cfg.patch_antennas}, {cfg.max_grid_cols * cfg.patch_subcarriers})"
            )
        return rows, cols

    def input_scale(self, num_antennas: int, num_subcarriers: int) -> float:
        """Factor the encoder applies to its input (see ``ModelConfig.input_norm``)."""
        if self.config.input_norm == "frobenius":
            return float(num_antennas * num_subcarriers) ** 0.5
        return 1.0

    def patchify(self, x: Tensor) -> Tensor:
        """``[B, 2, A, S]`` -> ``[B, P, patch_dim]`` (row-major over the patch grid)."""
        cfg = self.config
        batch, _, antennas, subcarriers = x.shape
        rows, cols = antennas // cfg.patch_antennas, subcarriers // cfg.patch_subcarriers
        x = x.reshape(batch, 2, rows, cfg.patch_antennas, cols, cfg.patch_subcarriers)
        x = x.permute(0, 2, 4, 1, 3, 5)  # [B, rows, cols, 2, pa, ps]
        return x.reshape(batch, rows * cols, cfg.patch_dim)

    def unpatchify(self, patches: Tensor, num_antennas: int, num_subcarriers: int) -> Tensor:
        """Inverse of :meth:`patchify`: ``[B, P, patch_dim]`` -> ``[B, 2, A, S]``."""
        cfg = self.config
        batch = patches.shape[0]
        rows, cols = num_antennas // cfg.patch_antennas, num_subcarriers // cfg.patch_subcarriers
        x = patches.reshape(batch, rows, cols, 2, cfg.patch_antennas, cfg.patch_subcarriers)
        x = x.permute(0, 3, 1, 4, 2, 5)  # [B, 2, rows, pa, cols, ps]
        return x.reshape(batch, 2, num_antennas, num_subcarriers)

    def positions(self, rows: int, cols: int) -> Tensor:
        """``[rows * cols, d_model]`` factorized 2-D positional embedding."""
        return (self.row_embed[:rows, None, :] + self.col_embed[None, :cols, :]).reshape(
            rows * cols, -1
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encode CSI.

        Parameters
        ----------
        x : float32 ``[B, 2, A, S]``, unit Frobenius norm per sample for the default
            ``input_norm`` (scaled by ``sqrt(A * S)`` inside).
        mask : optional bool ``[B, P]``; True patches are replaced by the mask token
            (both real and imaginary parts are hidden: they share a patch).

        Returns
        -------
        cls : ``[B, d_model]`` summary embedding.
        patches : ``[B, P, d_model]`` patch embeddings.
        """
        if x.dim() != 4 or x.shape[1] != 2:
            raise InputError(
                f"encoder input has shape {tuple(x.shape)}; expected [batch, 2, antennas, "
                "subcarriers] (use csi_to_real on complex CSI)"
            )
        rows, cols = self.grid(x.shape[2], x.shape[3])
        if mask is not None and tuple(mask.shape) != (x.shape[0], rows * cols):
            raise InputError(
                f"mask has shape {tuple(mask.shape)}; expected [batch, patches] = "
                f"[{x.shape[0]}, {rows * cols}]"
            )
        scale = self.input_scale(x.shape[2], x.shape[3])
        tokens = self.patch_embed(self.patchify(x * scale))  # [B, P, d]
        if mask is not None:
            tokens = torch.where(mask[..., None], self.mask_token.to(tokens.dtype), tokens)
        tokens = tokens + self.positions(rows, cols)  # [B, P, d]
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # [B, 1, d]
        h = torch.cat([cls, tokens], dim=1)  # [B, 1 + P, d]
        for block in self.blocks:
            h = block(h)
        h = self.norm(h)
        return h[:, 0], h[:, 1:]
