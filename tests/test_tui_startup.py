"""The first screen appears fast: no torch, transformers, Unsloth, datasets, PEFT or TRL in the UI
process until a step asks the engine for heavy work (in a worker); no schema (pydantic) before the
first frame; no key bar rebuilt for nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Input, Static

from tui.widgets.footer import StableFooter

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "unsloth", "datasets", "peft", "trl", "bitsandbytes")

FIRST_PAINT = r"""
import asyncio, json, sys
from tui.app import build_app

async def main():
    app = build_app(offer_resume=False, autosave=False)
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(50):  # the probe starts after the first frame, then fills the panel
            await pilot.pause(0.05)
            await app.workers.wait_for_complete()
            devices = str(app.screen.query_one("#devices").children[0].render())
            if "Looking for GPUs" not in devices:
                break
        step = app.current_step
    heavy = [m for m in HEAVY if m in sys.modules]
    print(json.dumps({"step": step, "heavy": heavy, "devices": devices}))

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
    # How fast is a benchmark's claim (benchmarks/first_paint.py), not a timed assertion here.


def test_cli_help_is_light(tmp_path):
    code = f"import sys, tui.cli, tui.app; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_the_first_screen_path_does_not_import_the_schema(tmp_path):
    # pydantic and the session models cost ~150 ms: they are imported after the first frame.
    code = ("import json, sys, tui.cli, tui.app, tui.screens.hardware; app = tui.app.build_app(); "
            "print(json.dumps([m for m in ('pydantic', 'engine.session.schema') if m in sys.modules]))")
    env = dict(os.environ, PYTHONPATH=str(ROOT), LORA_TUI_STATE=str(tmp_path / "state"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


class _Form(Screen):
    BINDINGS = [Binding("ctrl+n", "next", "Next")]

    def compose(self):
        yield Input(id="first")
        yield Input(id="second")
        yield _Shouty(id="third")
        yield StableFooter()


class _Shouty(Static, can_focus=True):
    BINDINGS = [Binding("ctrl+x", "shout", "Shout")]


class _FormApp(App):
    def on_mount(self):
        self.push_screen(_Form())


def test_the_key_bar_is_rebuilt_only_when_its_keys_change():
    async def drive():
        app = _FormApp()
        async with app.run_test(size=(80, 10)) as pilot:
            await pilot.pause()
            footer = app.screen.query_one(StableFooter)
            first_keys = list(footer.children)
            first_labels = [key.description for key in first_keys]
            await pilot.press("tab")  # Input -> Input: the same keys
            await pilot.pause(0.1)
            same = list(footer.children)
            await pilot.press("tab")  # -> a widget with a key of its own
            await pilot.pause(0.3)
            changed = [key.description for key in footer.children]
            return first_labels, first_keys, same, changed

    first_labels, first_keys, same, changed = asyncio.run(drive())
    assert "Next" in first_labels and "Shout" not in first_labels  # shown from the first frame
    assert same == first_keys  # the very same widgets: nothing was rebuilt
    assert "Shout" in changed and "Next" in changed
