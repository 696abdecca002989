"""The first screen appears fast: no torch, transformers, Unsloth, datasets, PEFT or TRL in the UI
process until a step asks the engine for heavy work (in a worker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "unsloth", "datasets", "peft", "trl", "bitsandbytes")

FIRST_PAINT = r"""
import asyncio, json, sys, time
start = time.perf_counter()
from tui.app import build_app
imported = time.perf_counter() - start

async def main():
    app = build_app(offer_resume=False, autosave=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        painted = time.perf_counter() - start
        step = app.current_step
        devices = str(app.screen.query_one("#devices").children[0].render())
    heavy = [m for m in HEAVY if m in sys.modules]
    print(json.dumps({"imported": imported, "painted": painted, "step": step, "heavy": heavy, "devices": devices}))

HEAVY = %r
asyncio.run(main())
"""


def test_importing_the_app_and_painting_hardware_loads_nothing_heavy(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), LORA_TUI_STATE=str(tmp_path / "state"),
               LORA_TUI_HARDWARE=str(ROOT / "tests" / "hardware" / "rtx4090.json"))
    result = subprocess.run([sys.executable, "-c", FIRST_PAINT % (HEAVY,)], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], f"heavy modules imported before the first screen: {report['heavy']}"
    assert report["step"] == "hardware" and "RTX 4090" in report["devices"]
    # Generous on a shared 2-core machine; torch alone takes several seconds to import.
    assert report["painted"] < 5.0, report


def test_cli_help_is_light(tmp_path):
    code = "import sys, tui.cli, tui.app; print(json.dumps([m for m in %r if m in sys.modules]))" % (HEAVY,)
    result = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
