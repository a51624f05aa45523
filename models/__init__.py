"""Torch modules only (no file I/O beyond HF from/save_pretrained): encoder, predictor, losses."""

from models.encoder import VideoEncoder, encoder_config, preprocess
from models.losses import contrastive_loss, temporal_loss
from models.predictor import Predictor

__all__ = ["VideoEncoder", "encoder_config", "preprocess", "Predictor", "temporal_loss", "contrastive_loss"]
