"""`iris finetune` (fine-tune VALL-E X on a folder of recordings) and `iris finetune-bench` (its cost)."""

from __future__ import annotations

from pathlib import Path

import typer

PRECISIONS = ("fp32", "fp16", "bf16")


def _precision(value: str) -> str:
    from iris_pipeline.errors import ConfigError

    if value not in PRECISIONS:
        raise ConfigError(f"finetune: --precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def _size(value: str) -> str:
    from iris_pipeline.errors import ConfigError

    if value not in ("full", "tiny"):
        raise ConfigError(f"finetune: --size must be full or tiny, got {value!r}")
    return value


def register(app: typer.Typer) -> None:
    @app.command("finetune")
    def finetune(
        data: Path = typer.Option(..., "--data", help="folder of NAME.wav + NAME.txt pairs"),
        steps: int = typer.Option(..., "--steps", min=1, help="optimizer steps to run"),
        checkpointing: bool = typer.Option(True, "--checkpointing/--no-checkpointing",
                                           help="recompute each transformer layer in backward (less memory)"),
        precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 (CUDA, grad scaler) or bf16"),
        batch_size: int = typer.Option(4, "--batch-size", min=1, help="utterances per micro-batch"),
        accumulate: int = typer.Option(1, "--accumulate", min=1, help="micro-batches per optimizer step"),
        lr: float = typer.Option(1e-4, "--lr", help="AdamW learning rate"),
        size: str = typer.Option("full", "--size", help="full (official) or tiny (tests)"),
        language: str = typer.Option("en", "--language", help="language of untagged transcripts: en, zh, ja"),
        init: Path | None = typer.Option(None, "--init", help="start from this VALL-E X checkpoint"),
        resume: bool = typer.Option(False, "--resume", help="also restore the optimizer state saved beside --init"),
        out: Path = typer.Option(Path("vallex-finetuned.pt"), "--out", help="checkpoint to write"),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N"),
        encodec_checkpoint: Path | None = typer.Option(None, "--encodec-checkpoint",
                                                       help="official EnCodec 24 kHz weights (codes of the data)"),
        cache_dir: Path | None = typer.Option(None, "--cache-dir", help="cache of EnCodec codes"),
        save_every: int = typer.Option(0, "--save-every", min=0, help="also save every N steps (0: at the end)"),
        seed: int = typer.Option(0, "--seed", help="seed of the batch order and the NAR draws"),
        min_seconds: float = typer.Option(0.5, "--min-seconds", help="shorter recordings are skipped"),
        max_seconds: float = typer.Option(22.0, "--max-seconds", help="longer recordings are skipped "
                                                                      "(official training: at most 22 s)"),
    ) -> None:
        """Fine-tune VALL-E X on DATA and save a checkpoint loadable by the VALL-E X stage.

        DATA holds NAME.wav (or .flac/.ogg) + NAME.txt pairs; transcripts are in --language unless
        tagged [EN]..[EN] / [ZH]..[ZH] / [JA]..[JA]. Bad pairs are listed and skipped. Writes OUT (the
        official {"model": state_dict} layout) and OUT's stem + .trainer.pt (optimizer state, for --resume).
        """
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from iris_pipeline.training.dataset import DataLimits
        from iris_pipeline.training.run import FinetuneOptions, run_finetune
        from iris_pipeline.training.step import TrainSettings

        settings = TrainSettings(lr=lr, precision=_precision(precision), checkpointing=checkpointing,
                                 accumulate=accumulate, seed=seed)
        options = FinetuneOptions(data=data, steps=steps, out=out, size=_size(size), device=device,
                                  batch_size=batch_size, language=language, init=init, resume=resume,
                                  encodec_checkpoint=encodec_checkpoint, cache_dir=cache_dir,
                                  save_every=save_every, seed=seed, settings=settings,
                                  limits=DataLimits(min_seconds=min_seconds, max_seconds=max_seconds))
        console = Console(stderr=True)

        bar = Progress(TextColumn("finetune"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("loss {task.fields[loss]} (ar {task.fields[ar]}, nar {task.fields[nar]})"),
                       TimeElapsedColumn(), console=console)
        task = bar.add_task("finetune", total=steps, loss="-", ar="-", nar="-")

        def on_data(found) -> None:
            for skipped in found.skipped:
                console.print(f"skipped {skipped}", markup=False, soft_wrap=True)
            console.print(f"{len(found.utterances)} utterance(s), {found.total_seconds:.1f} s of speech "
                          f"({found.encoded} encoded, {found.cache_hits} from the cache), "
                          f"{len(found.skipped)} skipped", markup=False)
            bar.start()  # the bar appears once the data is ready

        def on_step(result) -> None:
            bar.update(task, advance=1, loss=f"{result.loss:.3f}", ar=f"{result.ar_loss:.3f}",
                       nar=f"{result.nar_loss:.3f}")

        try:
            outcome = run_finetune(options, on_data=on_data, on_step=on_step)
        finally:
            bar.stop()
        last = outcome.results[-1]
        typer.echo(f"{outcome.checkpoint}: step {last.step}, loss {last.loss:.4f} "
                   f"(ar {last.ar_loss:.4f}, nar {last.nar_loss:.4f}); first step loss "
                   f"{outcome.results[0].loss:.4f}")

    @app.command("finetune-bench")
    def finetune_bench(
        out: Path = typer.Option(Path("finetune-bench.csv"), "--out", help="CSV to write (with context)"),
        size: str = typer.Option("full", "--size", help="full (official) or tiny"),
        device: str = typer.Option("cuda", "--device", help="cpu, cuda or cuda:N"),
        batch_size: int = typer.Option(8, "--batch-size", min=1),
        seconds: float = typer.Option(10.0, "--seconds", help="speech per utterance"),
        precision: list[str] = typer.Option(
            None, "--precision", help="mixed precision to compare with fp32 (default: fp16 on CUDA, bf16 on CPU)"),
        warmup: int = typer.Option(2, "--warmup", min=0),
        steps: int = typer.Option(5, "--steps", min=1, help="measured steps per case (median reported)"),
    ) -> None:
        """Peak memory and step time of fine-tuning, with and without checkpointing, fp32 vs mixed."""
        from iris_pipeline.training.benchmark import (
            BenchCase,
            default_cases,
            run_benchmark,
            summarize,
            write_benchmark_csv,
        )
        from iris_pipeline.training.run import resolve_device

        dev = resolve_device(device)
        cases = default_cases(dev)
        if precision:
            cases = [BenchCase(c, _precision(p)) for p in dict.fromkeys(["fp32", *precision]) for c in (False, True)]
        rows = run_benchmark(_size(size), dev, batch_size, seconds, cases, warmup, steps)
        write_benchmark_csv(out, rows)
        for row in rows:
            typer.echo(f"{row['precision']:>4} checkpointing={str(row['checkpointing']):5} "
                       f"step {row['step_ms_median']:.1f} ms  allocator peak {row['torch_peak_allocated_gb']:.3f} GB  "
                       f"nvml {row['nvml_peak_mem_gb']:.3f} GB  saved activations {row['saved_activations_gb']:.3f} GB")
        for line in summarize(rows):
            typer.echo(f"{line['precision']}: checkpointing saves {line['memory_saved_pct']:.1f} % memory "
                       f"({line['memory_plain_gb']:.3f} -> {line['memory_checkpointing_gb']:.3f} GB) and costs "
                       f"{line['step_time_cost_pct']:.1f} % step time")
        typer.echo(f"wrote {out}")
