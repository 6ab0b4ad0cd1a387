"""Configs of the RVC v2 synthesizer: the official 18-item list an exported model carries, per size."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

# Order of the constructor arguments as stored in an exported model's `config` list.
CONFIG_LIST_ORDER: tuple[str, ...] = (
    "spec_channels", "segment_size", "inter_channels", "hidden_channels", "filter_channels", "n_heads",
    "n_layers", "kernel_size", "p_dropout", "resblock", "resblock_kernel_sizes",
    "resblock_dilation_sizes", "upsample_rates", "upsample_initial_channel", "upsample_kernel_sizes",
    "spk_embed_dim", "gin_channels", "sr",
)

# Exported files may name the rate as a string.
SAMPLE_RATE_NAMES: dict[str, int] = {"32k": 32000, "40k": 40000, "48k": 48000}


@dataclass(frozen=True)
class SynthesizerConfig:
    spec_channels: int
    segment_size: int
    inter_channels: int
    hidden_channels: int
    filter_channels: int
    n_heads: int
    n_layers: int
    kernel_size: int
    p_dropout: float
    resblock: str
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    upsample_rates: tuple[int, ...]
    upsample_initial_channel: int
    upsample_kernel_sizes: tuple[int, ...]
    spk_embed_dim: int
    gin_channels: int
    sr: int
    # Not in the official list: width of the content features (768 for v2 = HuBERT layer 12).
    content_channels: int = 768
    # Fixed by the official class (flow: WN kernel 5, dilation 1, 3 layers, 4 couplings).
    flow_kernel_size: int = 5
    flow_n_layers: int = 3
    flow_n_flows: int = 4

    @property
    def hop_length(self) -> int:
        """Output samples per content frame (10 ms): product of the upsampling rates."""
        hop = 1
        for rate in self.upsample_rates:
            hop *= rate
        return hop

    def to_list(self) -> list:
        """The 18-item list exactly as the official exporter writes it."""
        values = asdict(self)
        out = []
        for name in CONFIG_LIST_ORDER:
            value = values[name]
            if isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out.append(value)
        return out

    @classmethod
    def from_list(cls, items: list, content_channels: int = 768) -> SynthesizerConfig:
        if len(items) != len(CONFIG_LIST_ORDER):
            raise ValueError(f"expected {len(CONFIG_LIST_ORDER)} config entries, got {len(items)}")
        values = dict(zip(CONFIG_LIST_ORDER, items, strict=True))
        sr = values["sr"]
        if isinstance(sr, str):
            if sr not in SAMPLE_RATE_NAMES:
                raise ValueError(f"unknown sample rate {sr!r}")
            sr = SAMPLE_RATE_NAMES[sr]
        values["sr"] = int(sr)
        for key in ("resblock_kernel_sizes", "upsample_rates", "upsample_kernel_sizes"):
            values[key] = tuple(int(v) for v in values[key])
        values["resblock_dilation_sizes"] = tuple(tuple(int(d) for d in ds)
                                                  for ds in values["resblock_dilation_sizes"])
        values["resblock"] = str(values["resblock"])
        return cls(**values, content_channels=content_channels)

    def with_speakers(self, spk_embed_dim: int) -> SynthesizerConfig:
        return replace(self, spk_embed_dim=spk_embed_dim)


_V2_COMMON = dict(
    spec_channels=1025, segment_size=32, inter_channels=192, hidden_channels=192, filter_channels=768,
    n_heads=2, n_layers=6, kernel_size=3, p_dropout=0, resblock="1", resblock_kernel_sizes=(3, 7, 11),
    resblock_dilation_sizes=((1, 3, 5), (1, 3, 5), (1, 3, 5)), upsample_initial_channel=512,
    spk_embed_dim=109, gin_channels=256,
)

FULL_CONFIGS: dict[str, SynthesizerConfig] = {
    "rvc_v2_40k": SynthesizerConfig(**_V2_COMMON, upsample_rates=(10, 10, 2, 2),
                                    upsample_kernel_sizes=(16, 16, 4, 4), sr=40000),
    "rvc_v2_48k": SynthesizerConfig(**_V2_COMMON, upsample_rates=(12, 10, 2, 2),
                                    upsample_kernel_sizes=(24, 20, 4, 4), sr=48000),
}


def tiny_config(full: SynthesizerConfig) -> SynthesizerConfig:
    """Same code paths and the same hop (output rate), few channels; content width 64 (tiny HuBERT)."""
    return replace(full, inter_channels=16, hidden_channels=16, filter_channels=32, n_layers=2,
                   resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3, 5),),
                   upsample_initial_channel=16, spk_embed_dim=4, gin_channels=8, content_channels=64)


def synthesizer_config(name: str, size: str) -> SynthesizerConfig:
    full = FULL_CONFIGS[name]
    return full if size == "full" else tiny_config(full)
