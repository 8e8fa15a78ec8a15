"""Masked channel modeling building blocks: masks, reconstruction head, NMSE.

Used by :mod:`rantune.pretraining` (the training loop) and by anything that scores a
checkpoint's reconstruction (benchmarks). Masks cover whole patches, so a masked
patch's real and imaginary parts are hidden together.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from rantune.errors import InputError
from rantune.fileio import sha256_file
from rantune.model.checkpoint import SHIPPED_DIR, load_checkpoint
from rantune.model.encoder import ChannelEncoder, csi_to_real


class ReconstructionHead(nn.Module):
    """Linear map from patch tokens ``[B, P, d]`` to patch values ``[B, P, patch_dim]``.

    Outputs live in the encoder's scaled input domain (see ``ChannelEncoder.input_scale``).
    """

    def __init__(self, d_model: int, patch_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, patch_dim)

    def forward(self, patches: Tensor) -> Tensor:
        return self.proj(patches)  # [B, P, patch_dim]


class MaskedChannelModel(nn.Module):
    """Encoder + reconstruction head: ``forward(x, mask) -> [B, P, patch_dim]``."""

    def __init__(self, encoder: ChannelEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ReconstructionHead(encoder.config.d_model, encoder.config.patch_dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        _, patches = self.encoder(x, mask)  # [B, P, d]
        return self.head(patches)  # [B, P, patch_dim]

    def target(self, x: Tensor) -> Tensor:
        """Clean target patches ``[B, P, patch_dim]`` in the head's (scaled) domain."""
        return self.encoder.patchify(x * self.encoder.input_scale(x.shape[2], x.shape[3]))


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """Generator for the random draws of one step (a pure function of its arguments)."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 7 + stream) % (2**63))


def random_mask(batch: int, num_patches: int, ratio: float, generator: torch.Generator) -> Tensor:
    """Bool ``[batch, num_patches]`` with exactly ``round(ratio * P)`` (>= 1, < P) True per row."""
    count = min(max(1, round(ratio * num_patches)), max(num_patches - 1, 1))
    order = torch.rand(batch, num_patches, generator=generator).argsort(dim=1)
    return order < count


def lwm_replacement(
    patches: Tensor, chosen: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """LWM 80/10/10 replacement.

    Parameters
    ----------
    patches : ``[B, P, patch_dim]`` input patches.
    chosen : bool ``[B, P]`` patches that are scored.

    Returns
    -------
    patches : ``[B, P, patch_dim]`` with 10% of the chosen patches swapped for random
        patches of the batch (the other 10% keep their content).
    token_mask : bool ``[B, P]``, the 80% that the encoder replaces by its mask token.
    """
    draw = torch.rand(chosen.shape, generator=generator)
    token_mask = chosen & (draw < 0.8)
    swap = chosen & (draw >= 0.8) & (draw < 0.9)
    flat = patches.reshape(-1, patches.shape[-1])
    donors = torch.randint(0, flat.shape[0], (int(swap.sum()),), generator=generator)
    patches = patches.clone()
    patches[swap] = flat[donors]
    return patches, token_mask


def add_awgn(
    x: Tensor, probability: float, snr_db: tuple[float, float], generator: torch.Generator
) -> Tensor:
    """Add complex white noise to unit-norm CSI ``[B, 2, A, S]`` for a random share of rows.

    The per-row SNR is uniform in ``snr_db`` (dB, signal power 1 over all entries).
    """
    batch, _, antennas, subcarriers = x.shape
    noisy = torch.rand(batch, generator=generator) < probability
    snr = snr_db[0] + (snr_db[1] - snr_db[0]) * torch.rand(batch, generator=generator)
    std = torch.sqrt(0.5 / (antennas * subcarriers) / 10.0 ** (snr / 10.0))  # per real part
    noise = torch.randn(x.shape, generator=generator) * std[:, None, None, None]
    return torch.where(noisy[:, None, None, None], x + noise, x)


def masked_nmse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Per-sample NMSE over masked patches or entries: ``[B, P, D]`` x2 -> ``[B]``.

    ``mask``: bool ``[B, P]`` (whole patches) or ``[B, P, D]`` (single entries of the
    patches, e.g. the non-pilot subcarriers inside each patch).
    """
    weight = mask.to(pred.dtype)
    weight = weight[..., None] if weight.dim() == 2 else weight  # [B, P, 1 or D]
    err = ((pred - target) ** 2 * weight).flatten(1).sum(1)
    ref = (target**2 * weight).flatten(1).sum(1).clamp_min(1e-12)
    return err / ref


@torch.no_grad()
def evaluate_masked_nmse(
    model: MaskedChannelModel,
    csi: np.ndarray | Tensor,
    mask_ratio: float,
    seed: int = 0,
    batch_size: int = 256,
) -> float:
    """Masked-reconstruction NMSE in dB (10 log10 of the mean per-sample NMSE).

    ``csi``: complex ``[N, A, S]`` (or float ``[N, 2, A, S]``); the masks are drawn
    from ``seed`` so two models are scored on the same hidden patches.
    """
    x = csi if isinstance(csi, Tensor) and csi.dim() == 4 else csi_to_real(csi)
    was_training = model.training
    model.eval()
    rows, cols = model.encoder.grid(x.shape[2], x.shape[3])
    generator = torch.Generator().manual_seed(seed)
    values = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        mask = random_mask(len(batch), rows * cols, mask_ratio, generator)
        values.append(masked_nmse(model(batch, mask), model.target(batch), mask))
    model.train(was_training)
    return float(10.0 * torch.log10(torch.cat(values).mean()))


def save_reconstruction_head(head: ReconstructionHead, path: Path) -> str:
    """Write the head's weights (safetensors, atomic); returns their sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous() for k, v in head.state_dict().items()}, tmp)
        digest = sha256_file(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def load_masked_model(name_or_path: str | Path = "tiny") -> MaskedChannelModel:
    """Encoder + reconstruction head of a checkpoint (shipped name or ``.safetensors`` path).

    Raises ``ValueError`` if the checkpoint has no reconstruction head next to it.
    """
    path = Path(name_or_path)
    if path.suffix != ".safetensors":
        path = SHIPPED_DIR / f"{name_or_path}.safetensors"
    encoder, card = load_checkpoint(path)
    head_path = path.with_name(path.stem + ".head.safetensors")
    if not head_path.exists():
        raise InputError(f"checkpoint {path} has no reconstruction head ({head_path.name})")
    expected = card.get("reconstruction_head", {}).get("sha256")
    if expected and sha256_file(head_path) != expected:
        raise InputError(f"{head_path} does not match the sha256 in its card: file corrupted")
    model = MaskedChannelModel(encoder)
    model.head.load_state_dict(load_file(str(head_path)), strict=True)
    model.eval()
    return model
