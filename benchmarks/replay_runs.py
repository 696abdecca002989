"""Shared by the training benchmarks: build a session, run `lora-tui --replay` on it, and read
throughput and peak memory back from what the run left behind.

Throughput comes from the run's own `events.jsonl`: the `log` events carry `tokens_seen` (real,
non-padding tokens handed to the model) and `time`; the steady state is the span from log step
`skip` to the last log, so model loading, data preparation and the first (compiling) steps are
left out. Peak memory of the worker is the kernel's exact high-water mark of the largest
descendant (`getrusage(RUSAGE_CHILDREN).ru_maxrss` read by a small wrapper process), and on a GPU
the last `log` event's `memory_gb` (torch.cuda.max_memory_allocated in the worker).
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEMO_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEMO_DATA = ROOT / "data" / "demo" / "extract_contacts.jsonl"

# Runs a command and prints the peak RSS (KiB) of its largest descendant: the kernel folds a reaped
# grandchild's peak (the training worker under the replay supervisor) into its parent's children.
_RUSAGE_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code)\n"
)


@dataclass
class Throughput:
    steps: int
    tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class ReplayRun:
    run_dir: Path
    exit_code: int
    wall_seconds: float
    peak_rss_gb: Optional[float]
    events: list = field(default_factory=list)
    samples: dict = field(default_factory=dict)  # what a sampler collected while the run went on

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and any(e.get("event") == "end" and e.get("status") == "completed" for e in self.events)

    @property
    def error(self) -> str:
        for event in reversed(self.events):
            if event.get("event") == "error":
                return event.get("message", "")
        return "" if self.ok else f"exit code {self.exit_code}; see {self.run_dir / 'worker.log'}"

    def throughput(self, skip: int) -> Throughput:
        return steady_throughput(log_points(self.events), skip)

    @property
    def gpu_peak_allocated_gb(self) -> Optional[float]:
        logs = [e for e in self.events if e.get("event") == "log" and e.get("memory_gb") is not None]
        return float(logs[-1]["memory_gb"]) if logs else None

    @property
    def backend(self) -> Optional[str]:
        for event in self.events:
            if event.get("event") == "status" and event.get("backend"):
                return event["backend"]
        return None


def log_points(events: list[dict]) -> list[tuple[int, float, int]]:
    """(step, wall time, tokens seen so far) of each `log` event."""
    return [(int(e["step"]), float(e["time"]), int(e["tokens_seen"]))
            for e in events if e.get("event") == "log" and "tokens_seen" in e]


def steady_throughput(points: list[tuple[int, float, int]], skip: int) -> Throughput:
    """Tokens and seconds from the log at step `skip` to the last log (both measured the same way
    in every benchmark, so the ratio compares like with like)."""
    points = sorted(points)
    start = next((p for p in points if p[0] >= skip), None)
    if start is None or start is points[-1]:
        raise ValueError(f"need logs past step {skip} to measure a steady state; got steps {[p[0] for p in points]}")
    end = points[-1]
    return Throughput(steps=end[0] - start[0], tokens=end[2] - start[2], seconds=end[1] - start[1])


def lora_tui_command() -> list[str]:
    """The installed `lora-tui` next to this interpreter, or the module when it is not installed."""
    script = Path(sys.executable).with_name("lora-tui")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tui.cli"]


def make_session(run_dir: Path, *, dataset: Path = DEMO_DATA, model: str = DEMO_MODEL, method: str = "lora",
                 backend: str = "unsloth", max_seq_length: int = 256, batch_size: int = 4, steps: int = 20,
                 r: int = 16, gradient_checkpointing="unsloth"):
    """A short, fixed run: every step logged, no eval, the only checkpoint after the last log."""
    from engine.session.schema import Session

    return Session.model_validate({
        "model": {"name": model, "max_seq_length": max_seq_length},
        "method": method,
        "backend": backend,
        "lora": {"r": r, "lora_alpha": 2 * r, "lora_dropout": 0.0},
        "dataset": {"path": str(dataset), "eval_fraction": 0.0},
        "training": {"per_device_train_batch_size": batch_size, "gradient_accumulation_steps": 1,
                     "max_steps": steps, "logging_steps": 1, "save_steps": steps, "save_total_limit": 1,
                     "learning_rate": 2e-4, "optim": "adamw_8bit", "gradient_checkpointing": gradient_checkpointing,
                     "seed": 42},
        "output": {"dir": str(run_dir)},
    })


def bench_env(work: Path) -> dict:
    """Keep benchmark runs out of the person's run registry and the working directory."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, LORA_TUI_STATE=str(work / "state"), PYTHONPATH=path, TOKENIZERS_PARALLELISM="false",
                PYTHONUNBUFFERED="1")


def run_replay(session, work: Path, name: str, *, timeout: float = 1800,
               sampler: Optional[Callable[[dict], None]] = None) -> ReplayRun:
    """`lora-tui --replay` on `session` (saved as work/name.json), wrapped to read the peak RSS."""
    from engine.runs.events import read_events
    from engine.session.schema import save_session

    run_dir = Path(session.output.dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    session_path = save_session(session, work / f"{name}.json")
    rss_file = work / f"{name}.maxrss"
    command = [sys.executable, "-c", _RUSAGE_WRAPPER, str(rss_file), *lora_tui_command(), "--replay", str(session_path)]
    samples: dict = {}
    started = time.perf_counter()
    with open(work / f"{name}.out", "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=bench_env(work), cwd=str(work))
        deadline = started + timeout
        while process.poll() is None:
            if sampler is not None:
                sampler(samples)
            if time.perf_counter() > deadline:
                process.kill()
                break
            time.sleep(0.1)
        code = process.wait()
    wall = time.perf_counter() - started
    try:
        peak = int(rss_file.read_text()) / 2**20  # KiB -> GiB
    except (OSError, ValueError):
        peak = None
    return ReplayRun(run_dir, code, wall, peak, read_events(run_dir), samples)


def write_long_rows(path: Path, rows: int, words: int, seed: int = 0) -> Path:
    """Instruction rows long enough that truncation fills max_seq_length: every batch is full."""
    vocabulary = ("contact order invoice weather travel recipe answer model number date place street city name "
                  "phone email company river mountain window garden letter table market").split()
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(rows):
            text = " ".join(rng.choice(vocabulary) for _ in range(words))
            handle.write(json.dumps({"instruction": "Repeat the words.", "input": "", "output": text}) + "\n")
    return path


def on_gpu() -> bool:
    """Through the project's hardware seam (NVML), without importing torch here."""
    from engine.planner.hardware import probe_hardware

    return not probe_hardware().cpu_only


def machine() -> dict:
    """The machine in a few words, for the tables and RESULTS.md."""
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load_1min": round(os.getloadavg()[0], 1)}
    try:
        from engine.planner.hardware import probe_hardware

        gpus = probe_hardware().gpus
        info["gpu"] = ", ".join(f"{g.name} ({g.total_gb:.0f} GB)" for g in gpus) or None
    except Exception:  # a description, never a failure
        info["gpu"] = None
    return info


def describe_machine(info: Optional[dict] = None) -> str:
    info = info or machine()
    gpu = info.get("gpu") or "no GPU"
    return f"{info['cpu']}, {info['cores']} cores, {info['ram_gb']} GiB RAM, {gpu}; load average {info['load_1min']}"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def write_json(path: Optional[str], data: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
