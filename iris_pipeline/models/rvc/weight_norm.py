"""Weight normalisation with the parameter names of the old `torch.nn.utils.weight_norm`.

Official RVC and fairseq checkpoints store a weight-normed layer as `weight_g` (magnitude) and
`weight_v` (direction). Newer torch versions name these `parametrizations.weight.original0/1`, so
the layers here own the two parameters directly and compute `weight = g * v / ||v||` themselves:
the state-dict names are the official ones on every torch >= 2.2.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _norm_except_dim(v: torch.Tensor, dim: int) -> torch.Tensor:
    """L2 norm of `v` over every dimension but `dim`, kept broadcastable (computed in fp32)."""
    dims = [d for d in range(v.dim()) if d != dim]
    return torch.linalg.vector_norm(v.float(), dim=dims, keepdim=True)


class _WeightNormed:
    """Mixin for a conv layer: replaces `weight` by `weight_g` / `weight_v` (norm over all dims but `dim`)."""

    weight_norm_dim: int

    def _split_weight(self, dim: int) -> None:
        weight = self.weight.detach()
        del self._parameters["weight"]
        self.weight_norm_dim = dim
        self.weight_g = nn.Parameter(_norm_except_dim(weight, dim).to(weight.dtype))
        self.weight_v = nn.Parameter(weight.clone())
        self._folded: torch.Tensor | None = None

    def normalized_weight(self) -> torch.Tensor:
        if self._folded is not None:
            return self._folded
        v = self.weight_v
        w = v.float() * (self.weight_g.float() / _norm_except_dim(v, self.weight_norm_dim))
        return w.to(v.dtype)

    def fold_weight_norm(self) -> None:
        """Freeze the current normalised weight for inference (skips the per-call norm)."""
        with torch.no_grad():
            self._folded = None
            self._folded = self.normalized_weight().detach()

    def _apply(self, fn, recurse=True):  # keep a folded weight on the module's device / dtype
        result = super()._apply(fn, recurse)  # type: ignore[misc]
        if self._folded is not None:
            self._folded = fn(self._folded)
        return result


class WNConv1d(_WeightNormed, nn.Conv1d):
    """`weight_norm(nn.Conv1d(...), dim=dim)` with the names `weight_g`, `weight_v`, `bias`."""

    def __init__(self, *args, weight_norm_dim: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self._split_weight(weight_norm_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.normalized_weight(), self.bias)


class WNConvTranspose1d(_WeightNormed, nn.ConvTranspose1d):
    """`weight_norm(nn.ConvTranspose1d(...))`: `weight_g` is [in_channels, 1, 1] (dim 0)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._split_weight(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x, self.normalized_weight(), self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


def fold_weight_norms(module: nn.Module) -> nn.Module:
    """Fold every weight-normed layer under `module` (inference speed; results are unchanged)."""
    for layer in module.modules():
        if isinstance(layer, _WeightNormed):
            layer.fold_weight_norm()
    return module
