"""The channel foundation model: config, encoder and the shipped checkpoint."""

from rantune.model.checkpoint import load_checkpoint, load_pretrained, save_checkpoint
from rantune.model.config import MODEL_SIZES, ModelConfig, model_config
from rantune.model.encoder import ChannelEncoder, csi_to_real, real_to_csi

__all__ = [
    "MODEL_SIZES",
    "ChannelEncoder",
    "ModelConfig",
    "csi_to_real",
    "load_checkpoint",
    "load_pretrained",
    "model_config",
    "real_to_csi",
    "save_checkpoint",
]
