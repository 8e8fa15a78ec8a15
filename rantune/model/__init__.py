"""The channel foundation model: config, encoder, the shipped checkpoint and the encoder
contract a custom encoder meets (:mod:`rantune.model.interface`, :mod:`rantune.model.custom`)."""

from rantune.model.checkpoint import load_checkpoint, load_pretrained, save_checkpoint
from rantune.model.config import MODEL_SIZES, ModelConfig, model_config
from rantune.model.encoder import ChannelEncoder, csi_to_real, real_to_csi
from rantune.model.interface import Encoder, TokenLayout, token_layout

__all__ = [
    "MODEL_SIZES",
    "ChannelEncoder",
    "Encoder",
    "ModelConfig",
    "TokenLayout",
    "csi_to_real",
    "load_checkpoint",
    "load_pretrained",
    "model_config",
    "real_to_csi",
    "save_checkpoint",
    "token_layout",
]
