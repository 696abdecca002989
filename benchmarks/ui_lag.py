"""How responsive the training dashboard stays: event-loop lag (p50, p99, max) of the real
`TrainingScreen`, measured in one run under three conditions:

  idle      the dashboard on a finished run folder (the baseline);
  flood     a writer appending log events as fast as a very fast GPU run logging every step
            (--flood-rate, 200 a second by default; 2,000 is a stress test);
  training  a real training worker (`engine.runs.launch`, the demo model) using every core.

Lag is how late a 10 ms `asyncio.sleep` wakes up: every millisecond of it is a keypress or a
redraw that waited. Goal (issue 8): p99 < 50 ms while training.

    .venv/bin/python benchmarks/ui_lag.py [--seconds 20] [--skip-training]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from textual.app import App  # noqa: E402

from engine.runs.events import EventWriter, read_events  # noqa: E402
from tui.screens.training import TrainingScreen  # noqa: E402

PROBE_INTERVAL = 0.010
DEMO_DATA = ROOT / "data" / "demo" / "extract_contacts.jsonl"


class Host(App):
    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir = run_dir

    def on_mount(self) -> None:
        self.push_screen(TrainingScreen(self.run_dir))


async def measure(run_dir: Path, seconds: float) -> dict:
    """Lag samples of the app's event loop while it shows `run_dir`, plus how far it got."""
    app = Host(run_dir)
    lags: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.5)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            before = time.perf_counter()
            await asyncio.sleep(PROBE_INTERVAL)
            lags.append(time.perf_counter() - before - PROBE_INTERVAL)
        screen = app.screen
        seen_step = screen.view.step if isinstance(screen, TrainingScreen) else None
    lags_ms = sorted(max(0.0, lag) * 1000 for lag in lags)
    return {
        "samples": len(lags_ms),
        "p50_ms": statistics.median(lags_ms),
        "p99_ms": lags_ms[min(len(lags_ms) - 1, int(len(lags_ms) * 0.99))],
        "max_ms": lags_ms[-1],
        "dashboard_step": seen_step,
    }


def write_finished_run(run_dir: Path, steps: int = 2000) -> None:
    """A long finished run for the idle baseline: the chart has plenty to draw."""
    writer = EventWriter(run_dir)
    writer.emit("start", total_steps=steps, step=0, resume_from=None, pid=None, run_dir=str(run_dir))
    rng = random.Random(0)
    for step in range(1, steps + 1):
        writer.emit("log", **_log_fields(step, steps, rng))
        if step % 100 == 0:
            writer.emit("eval", step=step, eval_loss=1.5 + 1.5 * 2.718 ** (-step / 400))
    writer.emit("end", status="completed", step=steps)
    writer.close()


def _log_fields(step: int, total: int, rng: random.Random) -> dict:
    return dict(step=step, epoch=step / 500, loss=1.2 + 2.6 * 2.718 ** (-step / 300) + rng.gauss(0, 0.05),
                learning_rate=2e-4 * (1 - step / total), grad_norm=1.0 + rng.random(), tokens_per_second=5000.0,
                samples_per_second=20.0, elapsed=step * 0.05, eta_seconds=(total - step) * 0.05, memory_gb=3.2,
                total_steps=total)


FLOOD_WRITER = """
import random, sys, time
sys.path.insert(0, {root!r})
from engine.runs.events import EventWriter
from benchmarks.ui_lag import _log_fields
writer = EventWriter({run_dir!r})
total = 10**7
writer.emit("start", total_steps=total, step=0, resume_from=None, pid=None, run_dir={run_dir!r})
rng, step, t0 = random.Random(1), 0, time.perf_counter()
while time.perf_counter() - t0 < {seconds}:
    for _ in range({per_tick}):
        step += 1
        writer.emit("log", **_log_fields(step, total, rng))
    time.sleep(0.01)
"""


def start_flood(run_dir: Path, seconds: float, rate: int = 200) -> subprocess.Popen:
    code = FLOOD_WRITER.format(root=str(ROOT), run_dir=str(run_dir), seconds=seconds + 5, per_tick=max(1, rate // 100))
    return subprocess.Popen([sys.executable, "-c", code])


def start_training(work: Path, seconds: float):
    """A real run of the demo model, long enough to outlast the measurement."""
    from engine.runs.registry import launch
    from engine.session.schema import Session

    session = Session.model_validate({
        "dataset": {"path": str(DEMO_DATA), "eval_fraction": 0.0},
        "model": {"max_seq_length": 256},
        "lora": {"r": 8, "lora_alpha": 16},
        "training": {"max_steps": 400, "logging_steps": 1, "per_device_train_batch_size": 2,
                     "gradient_accumulation_steps": 1, "learning_rate": 2e-4, "optim": "adamw_torch"},
        "output": {"dir": str(work / "run")},
    })
    return launch(session)


def wait_for_first_log(run_dir: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = read_events(run_dir)
        if any(e.get("event") == "log" for e in events):
            return True
        if any(e.get("event") in ("error", "end") for e in events):
            return False
        time.sleep(1)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement time per condition")
    parser.add_argument("--flood-rate", type=int, default=200, help="log events a second in the flood condition")
    parser.add_argument("--skip-training", action="store_true", help="idle and flood only (no model)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ui-lag-") as tmp:
        tmp = Path(tmp)
        idle = tmp / "idle"
        write_finished_run(idle)
        results["idle"] = asyncio.run(measure(idle, args.seconds))

        flood_dir = tmp / "flood"
        writer = start_flood(flood_dir, args.seconds, args.flood_rate)
        try:
            time.sleep(1.0)
            results["flood"] = asyncio.run(measure(flood_dir, args.seconds))
            results["flood"]["events_per_second"] = args.flood_rate
        finally:
            writer.kill()
            writer.wait()

        if not args.skip_training:
            handle = start_training(tmp, args.seconds)
            try:
                if wait_for_first_log(handle.run_dir, timeout=600):
                    results["training"] = asyncio.run(measure(handle.run_dir, args.seconds))
                    results["training"]["cpu_cores"] = os.cpu_count()
                else:
                    print(f"training did not start; see {handle.run_dir / 'worker.log'}", file=sys.stderr)
            finally:
                from engine.runs.registry import request_stop, run_state

                request_stop(handle.run_dir)
                deadline = time.monotonic() + 120
                while run_state(handle.run_dir).status in ("running", "paused") and time.monotonic() < deadline:
                    time.sleep(1)

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    base = results["idle"]["p99_ms"] or 1e-9
    print(f"UI event-loop lag of the training dashboard ({os.cpu_count()} CPU cores, probe every 10 ms)")
    print(f"{'condition':<10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p99 vs idle':>12}")
    for name, r in results.items():
        print(f"{name:<10} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.2f} {r['p99_ms'] / base:>11.1f}x")
    if "training" in results:
        verdict = "meets" if results["training"]["p99_ms"] < 50 else "misses"
        print(f"p99 while training: {results['training']['p99_ms']:.1f} ms ({verdict} the 50 ms goal)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
