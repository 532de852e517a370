"""A masked autoencoder around a timm ViT (He et al. 2021; DeepfakeMAE's stage 1): the encoder sees the
visible patches only, a light transformer decoder fills in the masked ones, and the loss is the mean
squared error over the masked patches' pixels (normalised as the model's input).

Patches are flattened row by row, each as ``p x p x 3`` values (:func:`patchify`). A mask is ``(B, N)``
bool, True = masked, with the same count in every row (:func:`training.partmask.fill_mask`).
"""
from __future__ import annotations

import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from plumbing.strict import ConfigError
from models.zoo import ModelConfig, build_model


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, N, p * p * C)``, patches row by row."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: torch.Tensor, patch: int, size: int) -> torch.Tensor:
    """The inverse of :func:`patchify` for square ``size x size`` images."""
    b, n, _ = patches.shape
    side = size // patch
    x = patches.reshape(b, side, side, patch, patch, -1)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, -1, size, size)


def visible_indices(mask: torch.Tensor) -> torch.Tensor:
    """The visible patches of each row of ``mask`` (``(B, N)`` bool, equal counts), ``(B, V)`` ascending."""
    order = mask.to(torch.uint8).argsort(dim=1, stable=True)
    return order[:, : int((~mask[0]).sum())]


class MaskedAutoencoder(nn.Module):
    """``encoder``: the classifier's timm ViT (:func:`models.zoo.build_model`'s, so its weights load
    into the classifier unchanged); decoder: ``decoder_depth`` transformer blocks of width
    ``decoder_width`` over all patches, masked ones a learned token, then a linear map to pixels."""

    def __init__(self, config: ModelConfig, decoder_width: int = 128, decoder_depth: int = 2,
                 decoder_heads: int = 4):
        super().__init__()
        encoder = build_model(config).encoder
        if not isinstance(encoder, VisionTransformer):
            raise ConfigError(f"masked-autoencoder pretraining needs a timm ViT encoder, not {config.encoder!r}")
        self.config, self.encoder, self.size = config, encoder, config.input_size
        self.patch = encoder.patch_embed.patch_size[0]
        if self.size % self.patch:
            raise ConfigError(f"input_size {self.size} is not a multiple of {config.encoder}'s patch size {self.patch}")
        self.patches = (self.size // self.patch) ** 2
        self.embed = nn.Linear(encoder.embed_dim, decoder_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_width))
        self.position = nn.Parameter(torch.zeros(1, self.patches, decoder_width))
        self.blocks = nn.Sequential(*(Block(decoder_width, decoder_heads) for _ in range(decoder_depth)))
        self.norm = nn.LayerNorm(decoder_width)
        self.pixels = nn.Linear(decoder_width, self.patch * self.patch * 3)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.position, std=0.02)

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The encoder's tokens for the visible patches (after its prefix tokens): ``(B, P + V, D)``."""
        enc = self.encoder
        tokens = enc._pos_embed(enc.patch_embed(images))  # prefix + every patch, positions added
        prefix, patches = tokens[:, : enc.num_prefix_tokens], tokens[:, enc.num_prefix_tokens:]
        keep = visible_indices(mask)
        patches = patches.gather(1, keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        return enc.norm(enc.blocks(enc.norm_pre(torch.cat([prefix, patches], dim=1))))

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``images`` ``(B, 3, S, S)`` normalised, ``mask`` ``(B, N)``: predicted patches ``(B, N, p * p * 3)``."""
        latent = self.embed(self.encode(images, mask)[:, self.encoder.num_prefix_tokens:])
        keep = visible_indices(mask)
        tokens = self.mask_token.expand(images.shape[0], self.patches, -1).clone()
        tokens = tokens.scatter(1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]), latent.to(tokens.dtype))
        return self.pixels(self.norm(self.blocks(tokens + self.position)))

    def loss(self, images: torch.Tensor, predicted: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the masked patches' pixels."""
        error = (predicted.float() - patchify(images, self.patch)).pow(2).mean(dim=-1)
        return (error * mask).sum() / mask.sum()
