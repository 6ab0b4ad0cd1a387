"""Fine-tuning VALL-E X on a user's own recordings.

* `dataset`: a folder of (audio, transcript) pairs -> phoneme ids + EnCodec codes (cached), bad pairs
  reported by name and skipped; `collate` pads a list of utterances into one batch with lengths.
* `losses`: the official training objective (lifeiteng/vall-e `VALLE.forward`, prefix_mode 1) over a
  padded batch: teacher-forced AR loss on codebook 0 and the NAR loss of one randomly drawn stage.
* `step`: `Trainer` = AdamW, fp16 autocast + grad scaler or bf16 autocast, per-layer activation
  checkpointing, gradient accumulation, gradient clipping.
* `checkpoint`: the model in the official `{"model": state_dict}` layout (atomic) and the trainer state
  (optimizer, scaler, random streams) in a file beside it.
* `benchmark`: peak memory and step time with and without checkpointing, fp32 vs mixed precision.
"""
