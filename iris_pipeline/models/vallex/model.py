"""VALL-E X (`VALLE` of Plachtaa/VALL-E-X): the AR decoder (codebook 0) and the NAR decoder (codebooks 1-7).

Parameter names, shapes and registration order are the official ones (manifest
`tests/data/manifests/vallex.json`), including the six NAR output layers that share their weight with
NAR audio embeddings 2..7 (`share_embedding=True`).

The methods here are the plain, uncached definition of the computation for ONE sequence; they are the
reference the fast batched decoder (`decode.py`) is tested against.
"""

from __future__ import annotations

import torch
from torch import nn

from iris_pipeline.models.vallex.config import BOS_ID, VallexConfig
from iris_pipeline.models.vallex.layers import Decoder, SinePositionalEmbedding, TokenEmbedding


class Vallex(nn.Module):
    def __init__(self, config: VallexConfig):
        super().__init__()
        self.config = config
        d, n_audio, n_q = config.d_model, config.num_audio_tokens, config.num_quantizers
        eps, table = config.layer_norm_eps, config.positional_table

        # Registration order = the official state-dict order.
        self.ar_text_embedding = TokenEmbedding(d, config.num_text_tokens)
        self.nar_text_embedding = TokenEmbedding(d, config.num_text_tokens)
        self.ar_audio_embedding = TokenEmbedding(d, n_audio + 2)  # codes, EOS, BOS
        self.ar_text_position = SinePositionalEmbedding(d, trainable_alpha=True, initial_length=table)
        self.ar_audio_position = SinePositionalEmbedding(d, trainable_alpha=True, initial_length=table)
        self.ar_decoder = Decoder(d, config.nhead, config.dim_feedforward, config.num_layers, eps,
                                  adaptive=False)
        self.ar_predict_layer = nn.Linear(d, n_audio + 1, bias=False)  # codes + EOS

        self.nar_audio_embeddings = nn.ModuleList(
            [TokenEmbedding(d, n_audio + 1)] + [TokenEmbedding(d, n_audio) for _ in range(n_q - 1)]
        )
        self.nar_text_position = SinePositionalEmbedding(d, trainable_alpha=False, initial_length=table)
        self.nar_audio_position = SinePositionalEmbedding(d, trainable_alpha=False, initial_length=table)
        self.nar_decoder = Decoder(d, config.nhead, config.dim_feedforward, config.num_layers, eps,
                                   adaptive=True)
        self.nar_predict_layers = nn.ModuleList(nn.Linear(d, n_audio, bias=False) for _ in range(n_q - 1))
        self.nar_stage_embeddings = nn.ModuleList(TokenEmbedding(d, 1) for _ in range(n_q - 1))
        # The output layer of NAR stage j (predicting codebook j+1) is the embedding of codebook j+2.
        for j in range(n_q - 2):
            self.nar_predict_layers[j].weight = self.nar_audio_embeddings[j + 2].word_embeddings.weight

        self.ar_language_embedding = TokenEmbedding(d, config.num_languages)
        self.nar_language_embedding = TokenEmbedding(d, config.num_languages)

    # ---- tied weights -------------------------------------------------------------------------
    def tied_pairs(self) -> list[tuple[str, str]]:
        """(output-layer name, embedding name) pairs that share one tensor."""
        return [(f"nar_predict_layers.{j}.weight", f"nar_audio_embeddings.{j + 2}.word_embeddings.weight")
                for j in range(self.config.num_quantizers - 2)]

    # ---- embeddings ---------------------------------------------------------------------------
    def ar_text(self, text: torch.Tensor, languages: torch.Tensor) -> torch.Tensor:
        """[S, D]: phoneme + language embeddings, then the text positional encoding (positions 0..S-1)."""
        x = self.ar_text_embedding(text) + self.ar_language_embedding(languages)
        return self.ar_text_position(x.unsqueeze(0))[0]

    def ar_audio(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """[T, D]: AR audio embedding at stream positions start..start+T-1 (BOS is position 0)."""
        positions = torch.arange(start, start + tokens.shape[0], device=tokens.device)
        self.ar_audio_position.ensure_length(start + tokens.shape[0])
        return self.ar_audio_position.at(self.ar_audio_embedding(tokens), positions)

    def nar_text(self, text: torch.Tensor, languages: torch.Tensor) -> torch.Tensor:
        x = self.nar_text_embedding(text) + self.nar_language_embedding(languages)
        return self.nar_text_position(x.unsqueeze(0))[0]

    def nar_stage_vector(self, stage: int) -> torch.Tensor:
        """[1, D] vector of NAR stage `stage` (1..7) that feeds every adaptive LayerNorm."""
        return self.nar_stage_embeddings[stage - 1].weight

    # ---- reference computations (one sequence, no cache) ----------------------------------------
    @staticmethod
    def ar_allowed_mask(text_len: int, audio_len: int, device: torch.device) -> torch.Tensor:
        """[N, N] True = may attend: text sees all text; audio sees all text and causally audio."""
        n = text_len + audio_len
        allowed = torch.zeros(n, n, dtype=torch.bool, device=device)
        allowed[:, :text_len] = True
        allowed[text_len:, text_len:] = torch.ones(audio_len, audio_len, dtype=torch.bool,
                                                   device=device).tril()
        return allowed

    def ar_logits_full(self, text: torch.Tensor, languages: torch.Tensor,
                       audio_stream: torch.Tensor) -> torch.Tensor:
        """Logits [T, 1025] at every position of `audio_stream` ([BOS, codes...]), whole prefix recomputed."""
        x = torch.cat([self.ar_text(text, languages), self.ar_audio(audio_stream)], dim=0).unsqueeze(0)
        allowed = self.ar_allowed_mask(text.shape[0], audio_stream.shape[0], text.device)
        h = self.ar_decoder(x, allowed)
        return self.ar_predict_layer(h[0, text.shape[0]:])

    def ar_stream(self, prompt_codebook0: torch.Tensor) -> torch.Tensor:
        """The AR input stream: BOS followed by the prompt's codebook-0 codes."""
        bos = torch.full((1,), BOS_ID, dtype=torch.long, device=prompt_codebook0.device)
        return torch.cat([bos, prompt_codebook0.long()])

    def nar_logits(self, text: torch.Tensor, languages: torch.Tensor, audio_sum: torch.Tensor,
                   stage: int) -> torch.Tensor:
        """NAR stage `stage`: logits [A, 1024] at every audio frame, given the summed audio embeddings."""
        audio = self.nar_audio_position(audio_sum.unsqueeze(0))[0]
        x = torch.cat([self.nar_text(text, languages), audio], dim=0).unsqueeze(0)
        h = self.nar_decoder(x, None, self.nar_stage_vector(stage))
        return self.nar_predict_layers[stage - 1](h[0, text.shape[0]:])

    def nar_complete(self, text: torch.Tensor, languages: torch.Tensor, prompt_codes: torch.Tensor,
                     codebook0: torch.Tensor) -> torch.Tensor:
        """Codes [T_g, 8] of the generated frames from their codebook 0 (greedy stages 1..7).

        prompt_codes: [T_p, 8] (the whole prompt is a prefix, all 8 codebooks); codebook0: [T_g].
        """
        t_p = prompt_codes.shape[0]
        emb = self.nar_audio_embeddings
        audio = emb[0](torch.cat([prompt_codes[:, 0].long(), codebook0.long()]))
        prompt_sum = audio[:t_p]
        for j in range(1, self.config.num_quantizers):
            prompt_sum = prompt_sum + emb[j](prompt_codes[:, j].long())
        audio = torch.cat([prompt_sum, audio[t_p:]], dim=0)
        codes = [codebook0.long()]
        for stage in range(1, self.config.num_quantizers):
            logits = self.nar_logits(text, languages, audio, stage)[t_p:]
            codes.append(logits.argmax(dim=-1))
            if stage < self.config.num_quantizers - 1:
                audio = torch.cat([audio[:t_p], audio[t_p:] + emb[stage](codes[-1])], dim=0)
        return torch.stack(codes, dim=-1)
