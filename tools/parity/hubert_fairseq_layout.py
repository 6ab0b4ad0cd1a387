"""Write a tiny checkpoint in the pickle layout of the published fairseq `hubert_base.pt`.

The published file (RVC's `hubert_base.pt`, fairseq `HubertModel` trained with the
`hubert_pretraining` task) is what fairseq's `Trainer.state_dict()` + `checkpoint_utils.save_checkpoint`
write: `args` None (hydra era), `cfg` the training config converted to plain containers
(`OmegaConf.to_container(..., enum_to_str=True)`), `model` the state dict, `criterion` None,
`optimizer_history` plain dicts, `task_state` `{'dictionaries': [fairseq.data.dictionary.Dictionary]}`
(the `km` label dictionary: 4 specials + one symbol per cluster), `extra_state` plain numbers.
The only class it pickles beyond tensors and containers is `fairseq.data.dictionary.Dictionary`
(users loading the real file in torch's weights-only mode report exactly that class as refused).

The dictionary here is an instance of fairseq's own `Dictionary` class, imported from a fairseq
checkout (its module's unrelated imports stubbed), filled with fairseq's own `add_symbol`, so the
pickle carries the same class name and the same attributes as the published file. The weights are
our TINY HuBERT with seeded random values, saved in float16 like the release.

    python tools/parity/hubert_fairseq_layout.py --fairseq /tmp/fairseq \\
        --out tests/data/parity/hubert_base_fairseq_layout_tiny.pt

fairseq commit used: 3d262bb25690e4eb2e7d3c1309b1e9c406ca4b99.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import torch

N_CLUSTERS = 20  # TINY has 24 label rows = 4 specials + 20 clusters (the release: 500 + 4)


def fairseq_dictionary_class(checkout: Path) -> type:
    """fairseq's `Dictionary`, loaded from `fairseq/data/dictionary.py` of a checkout without
    importing the rest of fairseq (its module-level imports are only used by other methods)."""
    for name in ("fairseq", "fairseq.data", "fairseq.file_chunker_utils", "fairseq.file_io", "fairseq.tokenizer"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["fairseq"].utils = types.ModuleType("fairseq.utils")
    sys.modules["fairseq.data"].data_utils = types.ModuleType("fairseq.data.data_utils")
    sys.modules["fairseq.file_chunker_utils"].Chunker = sys.modules["fairseq.file_chunker_utils"].find_offsets = None
    sys.modules["fairseq.file_io"].PathManager = None
    sys.modules["fairseq.tokenizer"].tokenize_line = None
    spec = importlib.util.spec_from_file_location("fairseq.data.dictionary",
                                                  checkout / "fairseq" / "data" / "dictionary.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fairseq.data.dictionary"] = module
    spec.loader.exec_module(module)
    return module.Dictionary


def published_layout(state: dict[str, torch.Tensor], dictionary: object) -> dict:
    """The top-level dict of the published file, with `state` as its weights."""
    return {
        "args": None,
        "cfg": {
            "_name": None,
            "common": {"_name": None, "fp16": True, "seed": 1337, "log_interval": 200},
            "task": {"_name": "hubert_pretraining", "data": "/path/to/data", "fine_tuning": False,
                     "labels": ["km"], "label_dir": "label", "label_rate": 50.0, "sample_rate": 16000,
                     "normalize": False, "enable_padding": False, "max_keep_size": None,
                     "max_sample_size": 250000, "min_sample_size": 32000, "single_target": False,
                     "random_crop": True, "pad_audio": False},
            "model": {"_name": "hubert", "label_rate": 50.0, "extractor_mode": "default",
                      "encoder_layers": 12, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072,
                      "encoder_attention_heads": 12, "activation_fn": "gelu", "layer_norm_first": False,
                      "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
                      "conv_bias": False, "final_dim": 256, "untie_final_proj": False,
                      "conv_pos": 128, "conv_pos_groups": 16},
            "criterion": {"_name": "hubert", "pred_masked_weight": 1.0, "pred_nomask_weight": 0.0,
                          "loss_weights": [10.0]},
        },
        "model": state,
        "criterion": None,
        "optimizer_history": [{"criterion_name": "HubertCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 400000}],
        "task_state": {"dictionaries": [dictionary]},
        "extra_state": {"metrics": {}, "previous_training_time": 1234.5,
                        "train_iterator": {"epoch": 100, "iterations_in_epoch": 0, "shuffle": True},
                        "val_loss": None},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fairseq", type=Path, required=True, help="a checkout of facebookresearch/fairseq")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from iris_pipeline import models

    dictionary = fairseq_dictionary_class(args.fairseq)()
    for cluster in range(N_CLUSTERS):
        dictionary.add_symbol(str(cluster), n=1000 + cluster)
    model = models.build("hubert_base", size="tiny", seed=16)
    state = {k: v.half() for k, v in model.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(published_layout(state, dictionary), args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
