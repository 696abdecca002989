"""How soon the wizard's first screen is drawn, against a bare Textual app measured the same way.

    .venv/bin/python benchmarks/first_paint.py [--runs 7]

Each measurement starts a fresh Python process (cold imports, as when a person types `lora-tui`)
on a pseudo-terminal of 120x40, as a real terminal would run it. The clock starts just before the
process is launched and stops when the screen's own text arrives on the terminal: the first frame
a person sees. The wizard runs as the `lora-tui` command does (`tui.cli.main`, empty state folder,
so it opens on the hardware step); the bare app is a Header, one Static and a Footer. The two
alternate (A B A B ...) and the medians are compared. Goal (issue 8): wizard <= 1.5x the bare app.

Each child also reports, from an exit hook, which heavy modules it had imported by then (none of
torch & co. should be; pydantic only after the first frame).
"""

from __future__ import annotations

import argparse
import compileall
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import sys
import tempfile
import termios
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.replay_runs import ROOT, describe_machine, machine, median, write_json

GOAL = 1.5
COLUMNS, LINES = 120, 40
# Text each first screen shows in its body: once it is on the terminal, the frame has been written
# (Textual writes a frame at once).
MARKERS = {"wizard": b"What this machine has", "bare": b"the first screen of a bare Textual app"}
HEAVY = ("pydantic", "torch", "transformers", "unsloth", "datasets", "peft", "trl")

# The clock is the parent's (it reads the terminal). Each child notes only which heavy modules it
# had loaded when its first frame's text was written.
PRELUDE = r"""
import json, os, sys
_marker = %r.encode()
_report = os.environ["FIRST_PAINT_REPORT"]
def _note_first_frame():
    import textual.drivers._writer_thread as w
    original = w.WriterThread.write
    def write(self, text):
        if _marker.decode() in text and not os.path.exists(_report):
            heavy = [m for m in %r if m in sys.modules]
            with open(_report, "w") as out:
                json.dump({"heavy": heavy}, out)
        return original(self, text)
    w.WriterThread.write = write
"""

CHILDREN = {
    "wizard": PRELUDE + r"""
_note_first_frame()
from tui.cli import main
sys.exit(main([]))
""",
    "bare": PRELUDE + r"""
_note_first_frame()
from textual.app import App
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

class First(Screen):
    def compose(self):
        yield Header()
        yield Static("Hello: the first screen of a bare Textual app.")
        yield Footer()

class Bare(App):
    def on_mount(self):
        self.push_screen(First())

Bare().run()
""",
}

_ESCAPES = re.compile(rb"\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[PX^_][^\x1b]*\x1b\\|[()][0-9A-Za-z]|.)")


def measure_once(kind: str, state: Path) -> dict:
    report = state / "first-frame.json"
    state.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               LORA_TUI_STATE=str(state), FIRST_PAINT_REPORT=str(report), TERM="xterm-256color",
               COLUMNS=str(COLUMNS), LINES=str(LINES))
    env.pop("TEXTUAL", None)
    code = CHILDREN[kind] % (MARKERS[kind].decode(), HEAVY)
    launched = time.time()
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of the measured size, then the app
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-c", code], env)
    seen = b""
    seen_at = None
    deadline = time.time() + 120
    try:
        while seen_at is None and time.time() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break  # the child closed the terminal (it exited)
            if not chunk:
                break
            seen += chunk
            if MARKERS[kind] in _ESCAPES.sub(b"", seen):
                seen_at = time.time()
                cpu_s = _cpu_seconds(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
    if seen_at is None:
        text = _ESCAPES.sub(b"", seen).decode(errors="replace").strip()[-300:]
        raise RuntimeError(f"the {kind} app drew no first screen within 120 s; its terminal showed: {text!r}")
    child = json.loads(report.read_text()) if report.exists() else {}
    time.sleep(0.2)  # let the killed child's memory be returned before the next one starts
    return {"painted_s": seen_at - launched, "cpu_s": cpu_s, "heavy": child.get("heavy", [])}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (Linux /proc): steadier than the wall
    clock on a shared machine, so it shows whether a change moved the work or just the noise."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="measurements of each app, alternated")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    args = parser.parse_args()

    info = machine()
    print(f"First paint: the wizard's first screen vs a bare Textual app ({describe_machine(info)})")
    # An installed program runs from bytecode; with PYTHONDONTWRITEBYTECODE set (as on CI images)
    # the wizard would otherwise compile its own modules on every launch and the bare app would not.
    for package in ("tui", "engine"):
        compileall.compile_dir(str(ROOT / package), quiet=1)
    samples: dict[str, list[dict]] = {"wizard": [], "bare": []}
    with tempfile.TemporaryDirectory(prefix="bench-paint-") as tmp:
        measure_once("bare", Path(tmp) / "warm")  # fills the OS file cache for both
        for run in range(args.runs):
            for kind in ("wizard", "bare"):
                samples[kind].append(measure_once(kind, Path(tmp) / f"{kind}-{run}"))
    print(f"{'app':<8} {'median s':>9} {'min s':>7} {'max s':>7} {'CPU s':>7}  loaded at the first frame")
    summary = {}
    for kind, runs in samples.items():
        painted = [r["painted_s"] for r in runs]
        summary[kind] = {"median_s": median(painted), "min_s": min(painted), "max_s": max(painted),
                         "cpu_median_s": median([r["cpu_s"] for r in runs]),
                         "heavy": sorted({m for r in runs for m in r["heavy"]})}
        s = summary[kind]
        print(f"{kind:<8} {s['median_s']:>9.3f} {s['min_s']:>7.3f} {s['max_s']:>7.3f} {s['cpu_median_s']:>7.2f}  "
              f"{', '.join(s['heavy']) or 'none of ' + ', '.join(HEAVY)}")
    # Each pair ran back to back, so its ratio cancels the drift of a shared machine's speed; the
    # verdict is on the median pair.
    pair_ratios = [w["painted_s"] / b["painted_s"] for w, b in zip(samples["wizard"], samples["bare"])]
    ratio = median(pair_ratios)
    of_medians = summary["wizard"]["median_s"] / summary["bare"]["median_s"]
    verdict = "meets" if ratio <= GOAL else "misses"
    print(f"ratio wizard / bare: median pair {ratio:.2f}, of the medians {of_medians:.2f}; "
          f"{verdict} the <= {GOAL} goal")
    print(f"pairs: {', '.join(f'{r:.2f}' for r in sorted(pair_ratios))}")
    write_json(args.json_out, {"machine": info, "runs": samples, "summary": summary, "ratio": ratio,
                               "ratio_of_medians": of_medians, "pair_ratios": pair_ratios})
    return 0


if __name__ == "__main__":
    sys.exit(main())
