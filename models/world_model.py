"""The registered model: one torch module from a uint8 clip to encoder embeddings and predicted future tokens.

    model = mlflow.pytorch.load_model("models:/surgical-world-model@champion")
    out = model(torch.from_numpy(clip))     # clip: uint8 (B, T, H, W, 3), T = clip_frames, H = W = size
    embeddings, future = model.split(out)   # (B, N, D) encoder tokens of the whole clip (t-major, then h, w)
                                            # (B, Nf, D) the predictor's tokens for frames context_frames..T-1,
                                            #            from the first context_frames frames alone

`forward` returns ONE tensor, (B, N + Nf, D) = embeddings then future tokens, so the MLflow pyfunc flavour
(`mlflow models serve`, `mlflow.pyfunc.load_model(...).predict(clip)`) works too; `embed` and `predict_future`
give either part alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.encoder import VideoEncoder, preprocess
from models.predictor import Predictor


class WorldModel(nn.Module):
    def __init__(self, encoder: VideoEncoder, predictor: Predictor, context_frames: int, clip_frames: int,
                 size: int):
        super().__init__()
        self.encoder, self.predictor = encoder, predictor
        self.context_frames, self.clip_frames, self.size = context_frames, clip_frames, size
        tg, hg, wg = encoder.grid(clip_frames, size, size)
        self.n_tokens = tg * hg * wg                                             # N
        self.n_future = (tg - context_frames // encoder.tubelet) * hg * wg      # Nf

    def embed(self, frames: Tensor) -> Tensor:
        """uint8 (B, T, H, W, 3) -> (B, N, D)."""
        return self.encoder(preprocess(frames))

    def predict_future(self, frames: Tensor) -> Tensor:
        """uint8 (B, T, H, W, 3) -> (B, Nf, D): from frames[:, :context_frames] only."""
        b, t, h, w, _ = frames.shape
        context = self.encoder(preprocess(frames[:, :self.context_frames]))  # (B, Nc, D)
        return self.predictor(context, self.encoder.grid(t, h, w), self.context_frames // self.encoder.tubelet)

    def split(self, out: Tensor) -> tuple[Tensor, Tensor]:
        """forward's output -> (embeddings (B, N, D), future (B, Nf, D))."""
        return out[:, :self.n_tokens], out[:, self.n_tokens:]

    def forward(self, frames: Tensor) -> Tensor:
        if frames.ndim != 5 or tuple(frames.shape[1:]) != (self.clip_frames, self.size, self.size, 3):
            raise ValueError(f"expected uint8 clips (B, {self.clip_frames}, {self.size}, {self.size}, 3), "
                             f"got {tuple(frames.shape)}")
        return torch.cat([self.embed(frames), self.predict_future(frames)], dim=1)  # (B, N + Nf, D)
