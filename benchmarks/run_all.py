"""`make bench`: every benchmark of issue 8 in turn, each printing its own short table, then one
summary of the ratios against their goals.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only overhead,paint,...] [--json-out FILE]

Each benchmark runs in its own process (a crash in one does not stop the others) with settings
short enough for a 2-core machine; --quick shortens them further. The same command runs unchanged
on a GPU machine (benchmarks/gpu_check.sh runs the GPU part with longer settings).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.replay_runs import describe_machine, machine  # noqa: E402


@dataclass
class Bench:
    key: str
    title: str
    script: str
    args: list[str]
    quick_args: list[str]
    goal: str
    # Reads the headline figure from the JSON the script wrote (or its printed output): (text, met?)
    headline: Callable[[Optional[dict], str], tuple[str, Optional[bool]]]
    writes_json: bool = True


def _find(pattern: str, output: str) -> Optional[float]:
    match = re.search(pattern, output)
    return float(match.group(1)) if match else None


def _overhead(data, output):
    if not data:
        return "no result", None
    return f"lora-tui / bare throughput {data['ratio']:.3f}", data["ratio"] >= 0.97


def _paint(data, output):
    if not data:
        return "no result", None
    s = data["summary"]
    return f"wizard / bare {data['ratio']:.2f} ({s['wizard']['median_s']:.2f} s vs {s['bare']['median_s']:.2f} s)", data["ratio"] <= 1.5


def _ui_lag(data, output):
    p99 = _find(r"p99 while training: ([\d.]+) ms", output)
    if p99 is None:
        flood = re.search(r"^flood\s+([\d.]+)\s+([\d.]+)", output, re.M)
        return ("training not measured" + (f"; flood p99 {flood.group(2)} ms" if flood else "")), None
    return f"p99 lag while training {p99:.1f} ms", p99 < 50


def _data_prep(data, output):
    ratio = _find(r"ratio ours / baseline: ([\d.]+)", output)
    return ("no result", None) if ratio is None else (f"prepare_dataset / datasets.map time {ratio:.2f}", None)


def _estimates(data, output):
    median = re.search(r"measured:\s+median \|error\| (\d+)%, worst (\d+)%", output)
    return ("no result", None) if not median else (f"published points: median |error| {median.group(1)}%, worst {median.group(2)}%", None)


def _peak(data, output):
    if not data:
        return "no result", None
    errors = [r.get("error") if data["device"] == "cpu" else r.get("error_torch") for r in data["rows"]]
    errors = [e for e in errors if isinstance(e, float)]
    if not errors:
        return "no run finished", None
    return f"estimate / measured - 1: {', '.join(f'{e:+.0%}' for e in errors)}", None


def _backends(data, output):
    if not data:
        return "no result", None
    if "skipped" in data:
        return "skipped: " + data["skipped"], None
    if "speed_ratio" not in data:
        return "a backend failed", None
    return f"unsloth / peft tokens/s {data['speed_ratio']:.2f}, memory peft / unsloth {data['memory_ratio']:.2f}", None


BENCHES = [
    # Short settings: a few dozen steps at most, small batches, so a 2-core machine finishes in under
    # an hour; gpu_check.sh runs the training ones longer on a GPU.
    Bench("overhead", "1. Wrapper overhead", "wrapper_overhead.py",
          ["--steps", "14", "--skip", "4", "--pairs", "2", "--batch-size", "2", "--max-seq-length", "128"],
          ["--steps", "8", "--skip", "2", "--pairs", "1", "--batch-size", "2", "--max-seq-length", "128"], ">= 0.97x", _overhead),
    Bench("paint", "2. First paint", "first_paint.py", ["--runs", "5"], ["--runs", "3"], "<= 1.5x", _paint),
    Bench("ui", "3. UI responsiveness", "ui_lag.py", ["--seconds", "10"], ["--seconds", "5"], "p99 < 50 ms", _ui_lag,
          writes_json=False),
    Bench("data", "4. Data preparation", "data_prep.py", ["--rows", "100000"], ["--rows", "20000"], "(report)", _data_prep,
          writes_json=False),
    Bench("estimates", "5a. Memory estimate vs published figures", "memory_estimate.py", [], [], "(report)", _estimates,
          writes_json=False),
    Bench("memory", "5b. Memory estimate vs this machine's runs", "peak_memory.py",
          ["--steps", "2", "--cases", "lora:128,lora:512,qlora:128,qlora:512"],
          ["--steps", "2", "--cases", "lora:128,qlora:128"], "(report)", _peak),
    Bench("backends", "6. Unsloth vs peft backend", "backends.py",
          ["--steps", "14", "--skip", "4", "--pairs", "1", "--batch-size", "2", "--max-seq-length", "128"],
          ["--steps", "8", "--skip", "2", "--batch-size", "2", "--max-seq-length", "128"], "(report)", _backends),
]


def run_bench(bench: Bench, quick: bool, work: Path) -> dict:
    json_path = work / f"{bench.key}.json"
    command = [sys.executable, str(HERE / bench.script), *(bench.quick_args if quick else bench.args)]
    if bench.writes_json:
        command += ["--json-out", str(json_path)]
    print(f"\n=== {bench.title}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(HERE.parent))
    lines = []
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    code = process.wait()
    output = "".join(lines)
    data = json.loads(json_path.read_text()) if json_path.exists() else None
    if code != 0:
        text, met = f"failed (exit {code})", False
    else:
        text, met = bench.headline(data, output)
    return {"key": bench.key, "title": bench.title, "exit_code": code, "seconds": round(time.perf_counter() - started, 1),
            "headline": text, "goal": bench.goal, "met": met, "data": data}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (a first look, noisier)")
    parser.add_argument("--only", help="comma-separated keys: " + ", ".join(b.key for b in BENCHES))
    parser.add_argument("--json-out", help="write every benchmark's figures to this JSON file")
    args = parser.parse_args()
    chosen = BENCHES
    if args.only:
        keys = [k.strip() for k in args.only.split(",")]
        unknown = [k for k in keys if k not in {b.key for b in BENCHES}]
        if unknown:
            print(f"run_all.py: unknown benchmark {', '.join(unknown)}; choose from {', '.join(b.key for b in BENCHES)}.",
                  file=sys.stderr)
            return 2
        chosen = [b for b in BENCHES if b.key in keys]

    info = machine()
    print(f"lora-tui benchmarks on {describe_machine(info)}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        for bench in chosen:
            results.append(run_bench(bench, args.quick, Path(tmp)))

    print("\n=== Summary")
    print(f"{'benchmark':<44} {'goal':<12} {'result'}")
    for r in results:
        verdict = {True: "  [meets]", False: "  [MISSES]", None: ""}[r["met"]]
        print(f"{r['title']:<44} {r['goal']:<12} {r['headline']}{verdict}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"machine": info, "results": results}, indent=2, default=str) + "\n")
    return 1 if any(r["exit_code"] != 0 for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
