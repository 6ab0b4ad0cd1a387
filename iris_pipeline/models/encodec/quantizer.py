"""Residual vector quantizer of EnCodec (inference only: encode to codes, decode to the latent).

State-dict layout as the official one: `vq.layers.{k}._codebook.{inited,cluster_size,embed,
embed_avg}`, all buffers (the codebooks were trained by EMA, not by gradient). Only `embed` is used.
"""

from __future__ import annotations

import torch
from torch import nn


class Codebook(nn.Module):
    """One codebook of `bins` vectors of size `dim`; nearest-vector lookup by Euclidean distance."""

    def __init__(self, dim: int, bins: int):
        super().__init__()
        # The official model starts from zeros and fills the codebooks by k-means on the first
        # training batch. A randomly built model here has no such batch, so it starts from the
        # official non-k-means init (kaiming uniform) and is marked initialised.
        embed = torch.empty(bins, dim)
        nn.init.kaiming_uniform_(embed)
        self.register_buffer("inited", torch.ones(1))
        self.register_buffer("cluster_size", torch.zeros(bins))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())

    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        """[N, dim] -> [N] indices of the nearest codewords (fp32 so fp16 models pick the same ones)."""
        x = vectors.float()
        embed = self.embed.float()
        # argmax of -(|x|^2 - 2 x.e + |e|^2), written in the official order of terms
        distance = -(x.pow(2).sum(1, keepdim=True) - 2 * x @ embed.t() + embed.pow(2).sum(1)[None, :])
        return distance.max(dim=-1).indices


class VectorQuantization(nn.Module):
    """Naming level of the official code (its projections are identities: codebook dim == latent dim)."""

    def __init__(self, dim: int, bins: int):
        super().__init__()
        self._codebook = Codebook(dim, bins)

    @property
    def codebook(self) -> torch.Tensor:
        return self._codebook.embed


class ResidualVectorQuantization(nn.Module):
    def __init__(self, dim: int, bins: int, num_quantizers: int):
        super().__init__()
        self.layers = nn.ModuleList(VectorQuantization(dim, bins) for _ in range(num_quantizers))


class ResidualVectorQuantizer(nn.Module):
    """latent [B, D, T] <-> codes [n_q, B, T] (the official internal order; the model transposes)."""

    def __init__(self, dimension: int, n_q: int, bins: int):
        super().__init__()
        self.dimension = dimension
        self.n_q = n_q
        self.bins = bins
        self.vq = ResidualVectorQuantization(dimension, bins, n_q)

    def encode(self, latent: torch.Tensor, n_q: int) -> torch.Tensor:
        """Greedy residual quantisation with the first `n_q` codebooks."""
        batch, dim, frames = latent.shape
        residual = latent.float().transpose(1, 2).reshape(batch * frames, dim)
        codes = []
        for layer in self.vq.layers[:n_q]:
            index = layer._codebook.encode(residual)
            residual = residual - layer.codebook.float()[index]
            codes.append(index.view(batch, frames))
        return torch.stack(codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [K, B, T] -> sum of the K codewords per frame, [B, D, T] in the codebooks' dtype."""
        quantized = None
        for k, index in enumerate(codes):
            vectors = nn.functional.embedding(index, self.vq.layers[k].codebook)
            quantized = vectors if quantized is None else quantized + vectors
        return quantized.transpose(1, 2)
