"""Cold start: seconds to load the target model + tokenizer from the safetensors cache
(`gateway.model_store.load_model()`) vs straight from the GGUF (dequantised on load), each in
a fresh subprocess so nothing is cached in the Python process.

    .venv/bin/python benchmarks/cold_start.py [--quick] [--reps 2] [--threads 1]

Each repetition starts one new interpreter per source, alternating safetensors / GGUF, which
evens out load from other processes on a shared machine. The child times its imports (torch,
transformers) and the load itself (model + tokenizer) separately; the parent also times the
whole process. Both files are read once before timing (and by earlier runs), so they sit in the
OS page cache: the numbers are for a warm disk cache, not a cold disk.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]

SOURCES = ("safetensors", "gguf")


def child(source: str, threads: int) -> None:
    """Runs in the fresh subprocess: import, load, print one JSON line."""
    import resource

    t0 = time.perf_counter()
    import torch
    import transformers  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from sia.gateway.model_store import gguf_path, load_model, safetensors_dir

    if threads:
        torch.set_num_threads(threads)
    imports_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tokenizer_s = None
    if source == "safetensors":
        model, tokenizer = load_model(safetensors_dir())
    else:
        gguf = gguf_path()
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
        )
        t1 = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer_s = time.perf_counter() - t1
    load_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"source": source, "imports_s": imports_s, "load_s": load_s, "tokenizer_s": tokenizer_s,
                      "params": params,
                      "dtype": str(next(model.parameters()).dtype), "vocab": len(tokenizer), "peak_rss_mb": rss_mb}))


def run_child(source: str, threads: int, timeout: float) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", source, "--threads", str(threads)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{source} load failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repetition per source")
    parser.add_argument("--reps", type=int, help="fresh processes per source (default 2, --quick 1)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads in the child (default: torch's)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per child process")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    parser.add_argument("--child", choices=SOURCES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.threads)
        return 0
    reps = args.reps or (1 if args.quick else 2)

    from sia.gateway.model_store import gguf_path, safetensors_dir

    # Make sure both exist (a first-time conversion must not be timed) and are in the page cache.
    for path in (gguf_path(), *sorted(safetensors_dir().iterdir())):
        if path.is_file():
            with path.open("rb") as handle:
                while handle.read(1 << 24):
                    pass

    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    results: dict[str, list[dict]] = {s: [] for s in SOURCES}
    for rep in range(reps):
        for source in SOURCES:
            r = run_child(source, args.threads, args.timeout)
            results[source].append(r)
            console.print(f"[dim]rep {rep + 1} {source}: load {r['load_s']:.2f} s, imports {r['imports_s']:.2f} s, "
                          f"process {r['process_s']:.2f} s[/dim]")

    table = Table(title=f"Cold start: model + tokenizer in a fresh process ({reps} reps each)")
    for col in ("source", "load s (each)", "load s (mean)", "of which tokenizer s", "imports s (mean)",
                "process s (mean)", "peak RSS MB", "dtype"):
        table.add_column(col, justify="left" if col in ("source", "dtype") else "right")
    mean = {s: statistics.fmean(r["load_s"] for r in results[s]) for s in SOURCES}
    proc = {s: statistics.fmean(r["process_s"] for r in results[s]) for s in SOURCES}
    for s in SOURCES:
        rs = results[s]
        table.add_row(
            s, ", ".join(f"{r['load_s']:.2f}" for r in rs), f"{mean[s]:.2f}",
            f"{statistics.fmean(r['tokenizer_s'] for r in rs):.2f}" if rs[0]["tokenizer_s"] is not None else "-",
            f"{statistics.fmean(r['imports_s'] for r in rs):.2f}", f"{proc[s]:.2f}",
            f"{max(r['peak_rss_mb'] for r in rs):.0f}", rs[0]["dtype"],
        )
    console.print(table)
    ratio = Table(title="Ratio")
    ratio.add_column("measure")
    ratio.add_column("gguf / safetensors", justify="right")
    ratio.add_row("load (model + tokenizer)", f"{mean['gguf'] / mean['safetensors']:.1f}x")
    ratio.add_row("whole process", f"{proc['gguf'] / proc['safetensors']:.1f}x")
    console.print(ratio)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
