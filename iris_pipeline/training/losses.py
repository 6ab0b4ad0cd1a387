"""The VALL-E X training objective over a padded batch (lifeiteng/vall-e `VALLE.forward`, train_stage 0).

AR (codebook 0, teacher forcing): the text block [phonemes + language embedding + text positions] is
followed by the audio stream [BOS, c0_1 .. c0_T] (positions restart at 0 with BOS, `prepend_bos`).
Text attends to text only; audio attends to all text and causally to audio; padded keys are hidden.
The target at stream position t is c0_(t+1), and EOS (1024) after the last real frame.

NAR (codebooks 1-7): one stage k in 1..7 is drawn per batch. prefix_mode 1: the first `prefix_len`
frames of every utterance act as the acoustic prompt and carry the embeddings of all 8 codebooks; the
other frames carry codebooks 0..k-1. No attention mask besides padding; the stage vector feeds every
adaptive LayerNorm; the loss is on codebook k of the frames after the prefix. `prefix_len` is drawn
from [0, 2 * floor(min_length / 4)) and capped at 225 frames (3 s), as Plachtaa's copy of the code
draws it (lifeiteng's draws from [floor(min_length / 4), 2 * floor(min_length / 4))).

Differences from the official code, on purpose:
* each loss is the mean cross-entropy over its real target frames (official: sums, which the trainer
  logs per frame); padding frames get no target (officially, padded AR positions are trained to emit
  EOS again, so a batch's loss depended on how much padding it had);
* the total is (AR + NAR) / 2, as officially;
* the phoneme ids carry no BOS/EOS: lifeiteng's training collater adds them, but VALL-E X's inference
  (Plachtaa `generate_audio`) feeds the bare ids, so fine-tuning matches what the model will be given;
* dropout: the model in `iris_pipeline.models.vallex` has none (it is an inference model), so training
  runs without the official 0.1 dropout.

Activation checkpointing recomputes each transformer layer in the backward pass instead of keeping its
activations (`torch.utils.checkpoint`, non-reentrant, so autocast and gradients are unchanged); it is
applied here, from outside the model, by running the decoder's layers one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from iris_pipeline.models.vallex.config import BOS_ID, EOS_ID
from iris_pipeline.models.vallex.model import Vallex
from iris_pipeline.training.dataset import TrainingBatch

IGNORE = -100  # cross-entropy target of positions that are not trained
MAX_PREFIX_FRAMES = 225  # 3 s at 75 frames/s


@dataclass(frozen=True)
class NarDraw:
    stage: int  # 1..7: the codebook the NAR predicts
    prefix_len: int  # frames of every utterance that act as the prompt


@dataclass
class LossParts:
    total: torch.Tensor  # (ar + nar) / 2, what is back-propagated
    ar: torch.Tensor
    nar: torch.Tensor
    ar_targets: int
    nar_targets: int
    draw: NarDraw


def draw_nar(batch: TrainingBatch, generator: torch.Generator, num_quantizers: int = 8) -> NarDraw:
    """A NAR stage (uniform over 1..7) and a prompt prefix length from a seeded CPU generator."""
    stage = int(torch.randint(1, num_quantizers, (), generator=generator))
    quarter = int(batch.code_lens.min()) // 4
    prefix = int(torch.randint(0, 2 * quarter, (), generator=generator)) if quarter > 0 else 0
    return NarDraw(stage, min(prefix, MAX_PREFIX_FRAMES))


def run_layers(decoder: torch.nn.Module, x: torch.Tensor, allowed: torch.Tensor | None,
               stage: torch.Tensor | None, checkpointing: bool) -> torch.Tensor:
    """The decoder's layers and final norm; with `checkpointing`, each layer is recomputed in backward."""
    for layer in decoder.layers:
        if checkpointing and torch.is_grad_enabled():
            x = checkpoint(_layer_output, layer, x, allowed, stage, use_reentrant=False)
        else:
            x = _layer_output(layer, x, allowed, stage)
    return decoder.final_norm(x, stage)


def _layer_output(layer: torch.nn.Module, x: torch.Tensor, allowed: torch.Tensor | None,
                  stage: torch.Tensor | None) -> torch.Tensor:
    return layer(x, allowed, stage)[0]  # the layer also returns its keys and values (KV cache)


def _text_block(embedding, language_embedding, position, batch: TrainingBatch) -> torch.Tensor:
    return position(embedding(batch.text) + language_embedding(batch.languages))


def ar_loss(model: Vallex, batch: TrainingBatch, checkpointing: bool = False) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy of the AR over codebook 0 of every real frame plus one EOS per utterance."""
    b, s = batch.text.shape
    t = batch.codes.shape[1]
    device = batch.codes.device
    codes0 = batch.codes[..., 0]
    code_mask = batch.code_mask
    bos = torch.full((b, 1), BOS_ID, dtype=torch.long, device=device)
    stream = torch.cat([bos, codes0], dim=1)  # [B, T+1]; padded entries are 0 and hidden as keys
    targets = F.pad(codes0.masked_fill(~code_mask, IGNORE), (0, 1), value=IGNORE)
    targets[torch.arange(b, device=device), batch.code_lens] = EOS_ID

    text = _text_block(model.ar_text_embedding, model.ar_language_embedding, model.ar_text_position, batch)
    audio = model.ar_audio_position(model.ar_audio_embedding(stream))
    x = torch.cat([text, audio], dim=1)

    stream_mask = F.pad(code_mask, (1, 0), value=True)  # BOS is always real
    key_real = torch.cat([batch.text_mask, stream_mask], dim=1)  # [B, N]
    n = s + t + 1
    structure = torch.zeros(n, n, dtype=torch.bool, device=device)
    structure[:, :s] = True  # everyone sees the text
    structure[s:, s:] = torch.ones(t + 1, t + 1, dtype=torch.bool, device=device).tril()
    allowed = (structure.unsqueeze(0) & key_real[:, None, :]).unsqueeze(1)  # [B, 1, N, N]

    h = run_layers(model.ar_decoder, x, allowed, None, checkpointing)
    logits = model.ar_predict_layer(h[:, s:])
    count = int((targets != IGNORE).sum())
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE, reduction="sum") / count
    return loss, count


def nar_loss(model: Vallex, batch: TrainingBatch, draw: NarDraw,
             checkpointing: bool = False) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy of NAR stage `draw.stage` over the real frames after the prompt prefix."""
    s = batch.text.shape[1]
    t = batch.codes.shape[1]
    device = batch.codes.device
    codes, code_mask, k, prefix = batch.codes, batch.code_mask, draw.stage, draw.prefix_len
    in_prefix = (torch.arange(t, device=device) < prefix).view(1, t, 1)

    emb = model.nar_audio_embeddings
    audio = emb[0](codes[..., 0])
    for j in range(1, len(emb)):
        contribution = emb[j](codes[..., j])
        # codebooks below the stage everywhere; the rest only in the prompt prefix (it is complete)
        audio = audio + (contribution if j < k else contribution * in_prefix.to(contribution.dtype))
    audio = model.nar_audio_position(audio)
    text = _text_block(model.nar_text_embedding, model.nar_language_embedding, model.nar_text_position, batch)
    x = torch.cat([text, audio], dim=1)

    key_real = torch.cat([batch.text_mask, code_mask], dim=1)
    allowed = key_real[:, None, None, :]  # [B, 1, 1, N]: only padding is hidden
    h = run_layers(model.nar_decoder, x, allowed, model.nar_stage_vector(k), checkpointing)
    logits = model.nar_predict_layers[k - 1](h[:, s + prefix:])
    targets = codes[:, prefix:, k].masked_fill(~code_mask[:, prefix:], IGNORE)
    count = int((targets != IGNORE).sum())
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE, reduction="sum") / count
    return loss, count


def training_loss(model: Vallex, batch: TrainingBatch, draw: NarDraw, checkpointing: bool = False) -> LossParts:
    """The official train_stage-0 objective: (AR loss + NAR loss of the drawn stage) / 2."""
    ar, ar_count = ar_loss(model, batch, checkpointing)
    nar, nar_count = nar_loss(model, batch, draw, checkpointing)
    return LossParts((ar + nar) / 2, ar, nar, ar_count, nar_count, draw)


@torch.no_grad()
def evaluation_loss(model: Vallex, batch: TrainingBatch, prefix_len: int | None = None) -> tuple[float, float]:
    """(AR loss, NAR loss averaged over all stages) with a fixed prefix: a noise-free progress measure.

    `prefix_len` defaults to a quarter of the shortest utterance (the middle of the training draw).
    """
    prefix = int(batch.code_lens.min()) // 4 if prefix_len is None else prefix_len
    ar, _ = ar_loss(model, batch)
    stages = range(1, model.config.num_quantizers)
    nar = sum(float(nar_loss(model, batch, NarDraw(k, prefix))[0]) for k in stages) / len(stages)
    return float(ar), nar
