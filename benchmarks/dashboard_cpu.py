"""What watching a run costs: CPU of the dashboard process, against a bare Textual app.

    .venv/bin/python benchmarks/dashboard_cpu.py [--seconds 30] [--size 80x24]

Three processes, each on its own pseudo-terminal (as a person's terminal runs them), one after the
other: a bare Textual app showing a static screen (the baseline), `lora-tui attach` on a stopped
run (the recorded memorise run: 36 steps, evaluations, a finding), and `lora-tui attach` on a live
run that a writer process extends as a worker logging every step would: a `step` and a `log` event
every second, a checkpoint every ten. After a settling time, the CPU time of each process (user +
system, from /proc/PID/stat, all its threads) is read over the window and shown as CPU seconds per
minute of watching and as a share of one core. Budget (issue 13): under 2 % of one core watching a
stopped run, under 5 % while a run logs every step. A completed run opens its finish screen over
the dashboard: measured too, for information.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.replay_runs import ROOT, describe_machine, machine, write_json

SETTLE_SECONDS = 6.0  # start-up (imports, first frame, the backlog) is not watching
BUDGET = {"stopped": 2.0, "live": 5.0}  # % of one core
TICKS = os.sysconf("SC_CLK_TCK")

BARE_APP = r"""
from textual.app import App
from textual.widgets import Footer, Header, Static

class Bare(App):
    def compose(self):
        yield Header()
        yield Static("a bare Textual app showing a static screen")
        yield Footer()

Bare().run()
"""

# Appends events as a worker that logs every step would: one step a second.
LIVE_WRITER = r"""
import math, os, sys, time
sys.path.insert(0, {root!r})
from engine.runs.events import EventWriter
writer = EventWriter({run_dir!r})
writer.emit("start", total_steps=100000, step=0, resume_from=None, pid=os.getpid())
started = time.monotonic()
step = 0
while time.monotonic() - started < {seconds}:
    step += 1
    elapsed = time.monotonic() - started
    writer.emit("step", step=step, total_steps=100000, elapsed=elapsed, samples=4 * step, tokens=480 * step,
                tokens_per_second=480.0, eta_seconds=100000 - step)
    writer.emit("log", step=step, loss=1.0 + math.exp(-step / 50), learning_rate=2e-4, grad_norm=0.5,
                tokens_per_second=480.0, elapsed=elapsed, eta_seconds=100000 - step, total_steps=100000)
    if step % 10 == 0:
        writer.emit("checkpoint", step=step, path="checkpoint-%d" % step)
    time.sleep(max(0.0, started + step - time.monotonic()))
"""


# For an older tree (--root), which has no `lora-tui attach`: its dashboard screen in an app of its own.
OLD_VIEWER = r"""
import sys
from pathlib import Path
from textual.app import App
from tui.screens.training import TrainingScreen

class Viewer(App):
    CSS_PATH = str(Path({root!r}) / "tui" / "styles" / "app.tcss")
    def on_mount(self):
        self.push_screen(TrainingScreen(Path(sys.argv[1])))

Viewer().run()
"""


def stopped_run(target: Path) -> Path:
    """The recorded memorise run as if stopped at its last step (`s`): it stays on the dashboard."""
    shutil.copytree(ROOT / "tests" / "fixtures" / "events" / "memorise", target)
    events = [json.loads(line) for line in (target / "events.jsonl").read_text().splitlines() if line.strip()]
    events = [e for e in events if e["event"] != "end"]
    events.append({"event": "end", "time": events[-1]["time"] + 1, "status": "stopped", "step": 36,
                   "checkpoint": str(target / "checkpoint-36")})
    (target / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return target


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime: fields 14 and 15 of the line


def measure(command: list[str], seconds: float, size: tuple[int, int], env: dict) -> dict:
    """Run `command` on a pty of `size`, drain its output, and measure its CPU over the window."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=env["PYTHONPATH"],
                               start_new_session=True)
    os.close(slave)
    received = 0
    start_cpu = start_wall = None
    deadline = time.monotonic() + SETTLE_SECONDS + seconds
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if start_wall is None and time.monotonic() >= deadline - seconds:
                start_cpu, start_wall = cpu_seconds(process.pid), time.monotonic()
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    received += len(os.read(master, 65536))
                except OSError:
                    break
        if process.poll() is not None:
            raise RuntimeError(f"{command[-1]} exited early with code {process.returncode}")
        used, wall = cpu_seconds(process.pid) - start_cpu, time.monotonic() - start_wall
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        os.close(master)
    return {"cpu_seconds": round(used, 3), "window_seconds": round(wall, 1), "bytes_drawn": received,
            "cpu_seconds_per_minute": round(60 * used / wall, 2), "percent_of_one_core": round(100 * used / wall, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="the measured window, per process")
    parser.add_argument("--size", default="120x40", help="terminal size, e.g. 80x24")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the lora-tui tree to measure (e.g. an older commit checked out with git worktree)")
    args = parser.parse_args()
    size = tuple(int(n) for n in args.size.split("x"))
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = args.root.resolve()
        env = dict(os.environ, PYTHONPATH=str(root), LORA_TUI_STATE=str(tmp / "state"), TERM="xterm-256color")
        if (root / "tui" / "attach.py").exists():
            dashboard = [python, "-m", "tui.cli", "attach"]
        else:
            dashboard = [python, "-c", OLD_VIEWER.format(root=str(root))]
        stopped = stopped_run(tmp / "stopped")
        results = {"bare": measure([python, "-c", BARE_APP], args.seconds, size, env)}
        results["stopped"] = measure([*dashboard, str(stopped)], args.seconds, size, env)
        finished = tmp / "finished"
        shutil.copytree(ROOT / "tests" / "fixtures" / "events" / "memorise", finished)
        results["finished"] = measure([*dashboard, str(finished)], args.seconds, size, env)
        live = tmp / "live"
        writer = subprocess.Popen([python, "-c", LIVE_WRITER.format(root=str(root), run_dir=str(live),
                                                                     seconds=args.seconds + SETTLE_SECONDS + 10)])
        time.sleep(1.0)
        try:
            results["live"] = measure([*dashboard, str(live)], args.seconds, size, env)
        finally:
            writer.kill()
            writer.wait()
    print(f"Watching a run, CPU of the UI process ({args.size}, {args.seconds:.0f} s each, after {SETTLE_SECONDS:.0f} s"
          f" to settle) on {describe_machine()}")
    print(f"{'process':<46} {'CPU s/min':>10} {'% of a core':>12} {'budget':>8}")
    names = {"bare": "bare Textual app, static screen (baseline)", "stopped": "lora-tui attach, stopped run",
             "finished": "lora-tui attach, completed run (finish screen)",
             "live": "lora-tui attach, a run logging every step"}
    ok = True
    for key, result in results.items():
        budget = BUDGET.get(key)
        within = budget is None or result["percent_of_one_core"] < budget
        ok &= within
        print(f"{names[key]:<46} {result['cpu_seconds_per_minute']:>10.2f} {result['percent_of_one_core']:>11.2f}%"
              f" {f'< {budget:g}%' if budget else '':>8}{'' if within else '  OVER'}")
    base = max(results["bare"]["cpu_seconds_per_minute"], 0.01)
    for key in ("stopped", "live"):
        print(f"ratio {key} / bare: {results[key]['cpu_seconds_per_minute'] / base:.1f}x")
    write_json(args.json, {"machine": machine(), "size": args.size, "seconds": args.seconds, "results": results,
                           "budget_percent": BUDGET, "within_budget": ok})
    print(json.dumps({"within_budget": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
