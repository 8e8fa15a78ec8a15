"""Model configuration of the channel transformer and its named sizes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rantune.errors import InputError
from rantune.schema import check_settings, setting

INPUT_NORMS = ("frobenius", "none")


@dataclass(frozen=True)
class ModelConfig:
    """Channel transformer hyper-parameters.

    Attributes
    ----------
    d_model : token width.
    num_layers : number of pre-norm transformer blocks.
    num_heads : attention heads per block (``d_model`` must be divisible by it).
    ffn_dim : hidden width of each block's feed-forward network.
    patch_antennas, patch_subcarriers : 2-D patch size over (antenna, subcarrier);
        every patch holds ``2 * patch_antennas * patch_subcarriers`` real values
        (real and imaginary parts together).
    max_grid_rows, max_grid_cols : largest patch grid the positional embedding
        covers, i.e. up to ``max_grid_rows * patch_antennas`` antennas and
        ``max_grid_cols * patch_subcarriers`` subcarriers.
    dropout : dropout inside attention outputs and FFN.
    input_norm : how the encoder scales its input. ``"frobenius"`` (default): the
        input is CSI with unit Frobenius norm per sample (as ``rantune.channels``
        stores it) and is multiplied by ``sqrt(A * S)``, so every complex entry has
        unit mean power whatever the shape (a fixed constant: no statistics of the
        input are used, so masked patches never leak through it). ``"none"``: as is.
    """

    d_model: int = setting(64, "token width", low=1)
    num_layers: int = setting(6, "transformer blocks", low=1)
    num_heads: int = setting(4, "attention heads per block (divide d_model)", low=1)
    ffn_dim: int = setting(256, "feed-forward hidden width", low=1)
    patch_antennas: int = setting(4, "patch height (antennas)", low=1)
    patch_subcarriers: int = setting(4, "patch width (subcarriers)", low=1)
    max_grid_rows: int = setting(32, "largest patch grid height", low=1)
    max_grid_cols: int = setting(32, "largest patch grid width", low=1)
    dropout: float = setting(0.0, "dropout in attention outputs and FFN", low=0.0, high=0.999)
    input_norm: str = setting("frobenius", "input scaling", choices=INPUT_NORMS)

    def __post_init__(self) -> None:
        check_settings(self, prefix="model.")
        if self.d_model % self.num_heads:
            raise InputError(
                f"model.d_model={self.d_model} is not divisible by num_heads={self.num_heads}; "
                "choose num_heads that divides d_model"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def patch_dim(self) -> int:
        """Real values per patch: 2 (re, im) x patch_antennas x patch_subcarriers."""
        return 2 * self.patch_antennas * self.patch_subcarriers

    def to_dict(self) -> dict:
        return asdict(self)


MODEL_SIZES: dict[str, ModelConfig] = {
    # ~0.33M parameters: trains on a 2-core CPU.
    "tiny": ModelConfig(d_model=64, num_layers=6, num_heads=4, ffn_dim=256),
    # ~2.4M parameters: LWM 1.1 scale.
    "small": ModelConfig(d_model=128, num_layers=12, num_heads=8, ffn_dim=512),
}


def model_config(size: str) -> ModelConfig:
    """Named model size (``tiny`` or ``small``)."""
    if size not in MODEL_SIZES:
        raise InputError(f"model size {size!r} is unknown: choose one of {sorted(MODEL_SIZES)}")
    return MODEL_SIZES[size]
