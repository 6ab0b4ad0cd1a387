"""Peak memory of `iris render` by clip length: is it flat in the clip's length?

Each length renders in a fresh process (so each peak is that render's own): a script of that many
seconds of expected speech (`chunking.benchmark_script`) with `--seconds` imposing exactly that
length, written to an mp4 as `iris render` writes it. The peak host memory is the process's
maximum resident set (getrusage); with CUDA, the peak GPU memory is PyTorch's allocator peak
(`max_memory_allocated`, and `max_memory_reserved`) over all devices.

    .venv/bin/python scripts/render_memory.py                               # tiny, CPU: 10,30,120,600 s
    .venv/bin/python scripts/render_memory.py --size full --device cuda     # GPU, full size

It prints one line per length and writes `render_memory.json` to `--out`; the exit status is 1 when
the peak host memory of the `--check-long` clip (default 120 s) is more than `--max-ratio` (default
1.3) times that of the `--check-short` clip (default 10 s).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"


def child(seconds: float, args: argparse.Namespace) -> None:
    """One render in this process; prints its peaks as one JSON line."""
    import torch

    from iris_pipeline import cli
    from iris_pipeline.chunking import benchmark_script

    with tempfile.TemporaryDirectory(prefix="iris-memory-") as scratch:
        out = Path(scratch) / "clip.mp4"
        argv = ["iris", "render", "--text", benchmark_script(seconds, "en"), "--seconds", f"{seconds:g}",
                "--reference", str(args.reference), "--transcript", "a short reference",
                "--avatar", str(args.avatar), "--out", str(out), "--size", args.size, "--device", args.device]
        if args.config is not None:
            argv += ["--config", str(args.config)]
        sys.argv = argv
        start = time.perf_counter()
        try:
            cli.main()
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
        wall = time.perf_counter() - start
        size = out.stat().st_size
    peaks = {
        "seconds": seconds,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
        "wall_s": round(wall, 1),
        "mp4_bytes": size,
    }
    if torch.cuda.is_available():
        devices = range(torch.cuda.device_count())
        peaks["peak_gpu_allocated_bytes"] = max(torch.cuda.max_memory_allocated(d) for d in devices)
        peaks["peak_gpu_reserved_bytes"] = max(torch.cuda.max_memory_reserved(d) for d in devices)
    print("RESULT " + json.dumps(peaks), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="10,30,120,600", help="clip lengths in seconds, comma-separated")
    parser.add_argument("--size", default="tiny", choices=("tiny", "full"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--config", type=Path, default=None, help="pipeline config YAML")
    parser.add_argument("--avatar", type=Path, default=DATA / "astronaut_face.jpg")
    parser.add_argument("--reference", type=Path, default=DATA / "speech_en_16k.wav")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/render_memory"))
    parser.add_argument("--check-short", type=float, default=10.0)
    parser.add_argument("--check-long", type=float, default=120.0)
    parser.add_argument("--max-ratio", type=float, default=1.3)
    parser.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args)
        return 0

    try:
        lengths = [float(v) for v in args.lengths.split(",") if v.strip()]
    except ValueError:
        print(f"error: --lengths {args.lengths!r}: expected numbers separated by commas", file=sys.stderr)
        return 2
    rows = []
    for seconds in lengths:
        command = [sys.executable, __file__, "--child", f"{seconds:g}", "--size", args.size, "--device", args.device,
                   "--avatar", str(args.avatar), "--reference", str(args.reference)]
        if args.config is not None:
            command += ["--config", str(args.config)]
        proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        result = next((line[len("RESULT "):] for line in proc.stdout.splitlines() if line.startswith("RESULT ")), None)
        if proc.returncode != 0 or result is None:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"error: the {seconds:g} s render failed: {tail}", file=sys.stderr)
            return 2
        row = json.loads(result)
        rows.append(row)
        gpu = (f", peak GPU {row['peak_gpu_allocated_bytes'] / 2**20:.0f} MiB allocated / "
               f"{row['peak_gpu_reserved_bytes'] / 2**20:.0f} MiB reserved") if "peak_gpu_allocated_bytes" in row else ""
        print(f"{seconds:>6g} s clip: peak RSS {row['peak_rss_bytes'] / 2**20:.0f} MiB{gpu} "
              f"(render {row['wall_s']} s, mp4 {row['mp4_bytes'] / 2**20:.1f} MiB)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    by_length = {row["seconds"]: row for row in rows}
    verdict = None
    if args.check_short in by_length and args.check_long in by_length:
        ratio = by_length[args.check_long]["peak_rss_bytes"] / by_length[args.check_short]["peak_rss_bytes"]
        verdict = {"short": args.check_short, "long": args.check_long, "ratio": round(ratio, 3),
                   "max_ratio": args.max_ratio, "pass": ratio <= args.max_ratio}
        print(f"peak RSS {args.check_long:g} s / {args.check_short:g} s = {ratio:.2f} "
              f"({'pass' if verdict['pass'] else 'FAIL'}: at most {args.max_ratio:g})")
    (args.out / "render_memory.json").write_text(json.dumps({"size": args.size, "device": args.device,
                                                              "rows": rows, "verdict": verdict}, indent=2))
    print(f"wrote {args.out / 'render_memory.json'}")
    return 1 if verdict is not None and not verdict["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
