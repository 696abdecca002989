"""How soon the wizard's first screen is drawn, against a bare Textual app measured the same way.

    .venv/bin/python benchmarks/first_paint.py [--runs 5]

Each measurement is a fresh Python process (cold imports, as when a person types `lora-tui`),
started headless through `App.run_test()`. The clock starts in the parent just before the process
is launched and stops when the first pushed screen has been mounted and refreshed once (a
`call_after_refresh` on that screen fires). The two apps alternate (A B A B ...) and the medians
are compared. The wizard is built the way `run_wizard` builds it (`tui.app.build_app`), with an
empty state folder. Goal (issue 8): wizard <= 1.5x the bare app.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.replay_runs import ROOT, describe_machine, machine, median, write_json  # noqa: E402

GOAL = 1.5

# The measured process: imports the app, runs it headless, reports when the first screen is drawn.
CHILD = r"""
import asyncio, json, sys, time
launched = float(sys.argv[2])
script_start = time.time()
if sys.argv[1] == "wizard":
    from tui.app import build_app
    app = build_app()
else:
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

    app = Bare()
imported = time.time()

async def main():
    drawn = asyncio.Event()
    async with app.run_test(size=(120, 40)) as pilot:
        while app.screen.id == "_default" or not app.screen.is_mounted:
            await asyncio.sleep(0.001)
        screen = app.screen
        screen.call_after_refresh(drawn.set)
        await drawn.wait()
        painted = time.time()
        name = type(screen).__name__
        heavy = [m for m in ("torch", "transformers", "unsloth", "datasets", "peft", "trl") if m in sys.modules]
    print(json.dumps({"painted_s": painted - launched, "startup_s": script_start - launched,
                      "import_s": imported - script_start, "screen": name, "heavy": heavy}))

asyncio.run(main())
"""


def measure_once(kind: str, state: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               LORA_TUI_STATE=str(state))
    launched = time.time()
    result = subprocess.run([sys.executable, "-c", CHILD, kind, repr(launched)], capture_output=True, text=True,
                            cwd=str(ROOT), env=env, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"the {kind} app failed to start: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measurements of each app, alternated")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    args = parser.parse_args()

    info = machine()
    print(f"First paint: the wizard's first screen vs a bare Textual app ({describe_machine(info)})")
    samples: dict[str, list[dict]] = {"wizard": [], "bare": []}
    with tempfile.TemporaryDirectory(prefix="bench-paint-") as tmp:
        measure_once("bare", Path(tmp) / "warm")  # fills the OS file cache for both
        for run in range(args.runs):
            for kind in ("wizard", "bare"):
                samples[kind].append(measure_once(kind, Path(tmp) / f"{kind}-{run}"))
    print(f"{'app':<8} {'first screen':<16} {'median s':>9} {'min s':>7} {'max s':>7} {'imports s':>10}  heavy modules")
    summary = {}
    for kind, runs in samples.items():
        painted = [r["painted_s"] for r in runs]
        summary[kind] = {"median_s": median(painted), "min_s": min(painted), "max_s": max(painted),
                         "import_median_s": median([r["import_s"] for r in runs]), "screen": runs[0]["screen"],
                         "heavy": sorted({m for r in runs for m in r["heavy"]})}
        s = summary[kind]
        print(f"{kind:<8} {s['screen']:<16} {s['median_s']:>9.3f} {s['min_s']:>7.3f} {s['max_s']:>7.3f} "
              f"{s['import_median_s']:>10.3f}  {', '.join(s['heavy']) or 'none'}")
    ratio = summary["wizard"]["median_s"] / summary["bare"]["median_s"]
    pair_ratios = [w["painted_s"] / b["painted_s"] for w, b in zip(samples["wizard"], samples["bare"])]
    verdict = "meets" if ratio <= GOAL else "misses"
    print(f"ratio wizard / bare (medians): {ratio:.2f} (pairs: {', '.join(f'{r:.2f}' for r in pair_ratios)}); "
          f"{verdict} the <= {GOAL} goal")
    write_json(args.json_out, {"machine": info, "runs": samples, "summary": summary, "ratio": ratio,
                               "pair_ratios": pair_ratios})
    return 0


if __name__ == "__main__":
    sys.exit(main())
