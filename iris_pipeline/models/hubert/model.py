"""fairseq `HubertModel` (base layout) for content features, as RVC uses it (`hubert_base.pt`).

Conv feature extractor (7 convs, stride 320 = 20 ms) -> LayerNorm -> Linear -> convolutional
position embedding -> LayerNorm -> post-norm transformer layers. `extract_features` returns the
output of a given layer (RVC v2: the last of 12, 768-d). The pretraining heads (`final_proj`,
`label_embs_concat`, `mask_emb`) are kept so the official state dict loads strictly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from iris_pipeline.models.rvc.weight_norm import WNConv1d

# (channels, kernel, stride) of fairseq's "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
CONV_LAYOUT: tuple[tuple[int, int], ...] = ((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2))


@dataclass(frozen=True)
class HubertConfig:
    conv_channels: int = 512
    embed_dim: int = 768
    ffn_dim: int = 3072
    n_layers: int = 12
    n_heads: int = 12
    conv_pos: int = 128
    conv_pos_groups: int = 16
    final_dim: int = 256
    n_label_rows: int = 504  # 500 k-means classes + 4 fairseq specials
    layer_norm_eps: float = 1e-5


FULL = HubertConfig()
TINY = HubertConfig(conv_channels=32, embed_dim=64, ffn_dim=128, n_layers=2, n_heads=4, conv_pos=16,
                    conv_pos_groups=4, final_dim=16, n_label_rows=24)


def gelu_fp32(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU computed in fp32, as fairseq does."""
    return F.gelu(x.float()).type_as(x)


def conv_output_frames(n_samples: int) -> int:
    """Number of feature frames (50 per second) for `n_samples` at 16 kHz."""
    n = n_samples
    for kernel, stride in CONV_LAYOUT:
        n = (n - kernel) // stride + 1
    return max(n, 0)


class Fp32GroupNorm(nn.GroupNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(),
                            self.eps).type_as(x)


class _ConvLayer(nn.Module):
    """Index 0: conv (no bias); 1: dropout (p = 0, no-op); 2: GroupNorm (first layer only)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, group_norm: bool):
        super().__init__()
        self.add_module("0", nn.Conv1d(in_channels, out_channels, kernel, stride, bias=False))
        nn.init.kaiming_normal_(self._modules["0"].weight)
        self.add_module("1", nn.Dropout(0.0))
        if group_norm:
            self.add_module("2", Fp32GroupNorm(out_channels, out_channels, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self._modules.values():
            x = module(x)
        return gelu_fp32(x)


class ConvFeatureExtractor(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        layers, in_channels = [], 1
        for i, (kernel, stride) in enumerate(CONV_LAYOUT):
            layers.append(_ConvLayer(in_channels, channels, kernel, stride, group_norm=i == 0))
            in_channels = channels
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav.unsqueeze(1)  # [B, 1, T]
        for layer in self.conv_layers:
            x = layer(x)
        return x  # [B, C, frames]


class PositionalConv(nn.Module):
    """`encoder.pos_conv`: grouped conv with weight norm over dim 2, trimmed to length ("SamePad"), GELU."""

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        conv = WNConv1d(dim, dim, kernel, padding=kernel // 2, groups=groups, weight_norm_dim=2)
        self.remove = 1 if kernel % 2 == 0 else 0
        self.add_module("0", conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        y = self._modules["0"](x)
        if self.remove:
            y = y[:, :, : -self.remove]
        return gelu_fp32(y)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        heads = [p(x).view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)
                 for p in (self.q_proj, self.k_proj, self.v_proj)]
        mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(*heads, attn_mask=mask)  # scale 1/sqrt(head_dim)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    """Post-norm transformer layer (fairseq TransformerSentenceEncoderLayer, layer_norm_first=False)."""

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.self_attn = SelfAttention(cfg.embed_dim, cfg.n_heads)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.embed_dim)
        self.final_layer_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.self_attn_layer_norm(x + self.self_attn(x, key_padding_mask))
        return self.final_layer_norm(x + self.fc2(gelu_fp32(self.fc1(x))))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.pos_conv = PositionalConv(cfg.embed_dim, cfg.conv_pos, cfg.conv_pos_groups)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_layers))
        self.layer_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None, n_layers: int) -> torch.Tensor:
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        x = self.layer_norm(x)  # before the layers: post-norm layout
        # fairseq pads time to a multiple of 2 with masked frames; masked keys get zero attention
        # weight, so the unpadded computation gives the same outputs for the real frames.
        for layer in self.layers[:n_layers]:
            x = layer(x, padding_mask)
        return x


class HubertModel(nn.Module):
    def __init__(self, cfg: HubertConfig = FULL):
        super().__init__()
        self.cfg = cfg
        self.mask_emb = nn.Parameter(torch.empty(cfg.embed_dim).uniform_())
        self.label_embs_concat = nn.Parameter(torch.empty(cfg.n_label_rows, cfg.final_dim).uniform_())
        self.feature_extractor = ConvFeatureExtractor(cfg.conv_channels)
        self.post_extract_proj = nn.Linear(cfg.conv_channels, cfg.embed_dim)
        self.encoder = TransformerEncoder(cfg)
        self.layer_norm = nn.LayerNorm(cfg.conv_channels, eps=cfg.layer_norm_eps)
        self.final_proj = nn.Linear(cfg.embed_dim, cfg.final_dim)

    @property
    def n_layers(self) -> int:
        return self.cfg.n_layers

    @property
    def feature_dim(self) -> int:
        return self.cfg.embed_dim

    def extract_features(self, wav16k: torch.Tensor, output_layer: int | None = None,
                         padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """wav16k [B, T] (16 kHz, not normalised) -> output of layer `output_layer` [B, frames, embed_dim].

        `output_layer` counts from 1 (fairseq's convention); None = the last layer (12 in the full
        model, what RVC v2 uses). `padding_mask` [B, T] marks padded samples (True).
        """
        n_layers = self.cfg.n_layers if output_layer is None else int(output_layer)
        if not 1 <= n_layers <= self.cfg.n_layers:
            raise ValueError(f"output_layer must be in 1..{self.cfg.n_layers}, got {output_layer}")
        features = self.feature_extractor(wav16k).transpose(1, 2)
        features = self.post_extract_proj(self.layer_norm(features))
        frame_mask = None
        if padding_mask is not None and bool(padding_mask.any()):
            frame_mask = _frame_padding_mask(padding_mask, features.shape[1])
        return self.encoder(features, frame_mask, n_layers)


def _frame_padding_mask(padding_mask: torch.Tensor, n_frames: int) -> torch.Tensor:
    """fairseq's reduction of a sample mask to frames: a frame is padding if all its samples are."""
    extra = padding_mask.shape[1] % n_frames
    if extra:
        padding_mask = padding_mask[:, :-extra]
    return padding_mask.view(padding_mask.shape[0], n_frames, -1).all(-1)
