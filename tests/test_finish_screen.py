"""The finish screen, driven by Pilot: on a real finished run (load code that works, merge, try it),
from the wizard's dashboard when a run completes, and a snapshot of a recorded run folder."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import time
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import Input, Static

from tests.conftest import ROOT, copy_run
from tui.screens.finish import FinishScreen, folder_size, human_size

RECORDED = Path("tests/fixtures/events/finished")  # relative: the snapshot shows paths as given
SIZE = (120, 40)


class Host(App):
    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir = run_dir

    def on_mount(self) -> None:
        self.push_screen(FinishScreen(self.run_dir))


def sync(test):
    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


def text(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def wait_for(pilot, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.5)


@pytest.mark.training
@sync
async def test_finish_screen_on_a_real_run_loads_merges_and_tries(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    app = Host(run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        screen = app.screen
        assert isinstance(screen, FinishScreen)
        adapter = run_dir / "adapter"
        assert f"{adapter}  ({human_size(folder_size(adapter))}" in text(screen, "#saved-path")
        assert "adapter_model.safetensors" in text(screen, "#saved-weights")
        assert "completed at step 2" in text(screen, "#finish-title") and "peft backend" in text(screen, "#finish-title")
        assert text(screen, "#reproduce") == f"lora-tui --replay {run_dir / 'session.json'}"
        assert "Not merged" in text(screen, "#merge-status")

        # The load code on screen is exactly what a person pastes: run it.
        snippet = text(screen, "#snippet")
        namespace: dict = {}
        exec(snippet, namespace)
        from peft import PeftModel

        assert isinstance(namespace["model"], PeftModel) and namespace["tokenizer"].eos_token

        # m: merge in a separate process; the screen says where, how big, and that it is 16-bit.
        await pilot.press("m")
        await wait_for(pilot, lambda: not screen.merging, timeout=900)
        status = text(screen, "#merge-status")
        assert str(run_dir / "merged") in status and "16-bit (bf16)" in status, status
        assert (run_dir / "merged" / "config.json").is_file()

        # Try it: enter in the prompt; base and fine-tuned answers side by side, from a separate process.
        await pilot.press("t")
        assert isinstance(app.focused, Input)
        await pilot.press(*"List three colours.")
        await pilot.press("enter")
        assert "Loading the models" in text(screen, "#try-status")
        await wait_for(pilot, lambda: "greedy" in text(screen, "#try-status") or "failed" in text(screen, "#try-status"),
                       timeout=900)
        assert "Alpaca layout" in text(screen, "#try-status"), text(screen, "#try-status")
        base, tuned = text(screen, "#base-text"), text(screen, "#tuned-text")
        assert base and tuned and base != "…" and tuned != "…"
        process = screen.client.process
        assert process is not None and process.poll() is None  # kept for the next prompt
        await pilot.press("escape")
        await pilot.pause(0.5)
    assert process.wait(timeout=30) is not None  # leaving the screen ends the generation process


def test_finish_screen_imports_nothing_heavy():
    import subprocess

    code = ("import sys, tui.screens.finish, engine.evaluation.generate, engine.export; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'unsloth') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


@sync
async def test_a_completed_run_opens_the_finish_screen_from_the_dashboard(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    from tui.app import build_app
    from tui.screens.training import TrainingScreen

    run_dir = copy_run(ROOT / RECORDED, tmp_path / "run")
    app = build_app(offer_resume=False, autosave=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        app.push_screen(TrainingScreen(run_dir, probe_system=False))
        await wait_for(pilot, lambda: isinstance(app.screen, FinishScreen), timeout=30)
        assert app.screen.run_dir == run_dir
        await pilot.press("escape")
        await pilot.pause(0.3)
        assert isinstance(app.screen, TrainingScreen)
        await pilot.press("f")  # the finish screen again
        await wait_for(pilot, lambda: isinstance(app.screen, FinishScreen), timeout=10)


@sync
async def test_the_try_it_input_field_is_there_when_the_data_had_an_input_column(tmp_path):
    with_input = copy_run(ROOT / RECORDED, tmp_path / "with-input")  # the demo data: instruction + input
    without = copy_run(ROOT / RECORDED, tmp_path / "without")
    events = without / "events.jsonl"
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    for event in lines:
        if event.get("event") == "data":
            event["columns"] = {"instruction": "instruction", "input": None, "response": "output"}
    events.write_text("".join(json.dumps(e) + "\n" for e in lines))
    shown = {}
    for run_dir in (with_input, without):
        app = Host(run_dir)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.2)
            shown[run_dir.name] = bool(app.screen.query("#prompt-input"))
            if run_dir is with_input:
                await pilot.press("t")
                await pilot.press("enter")  # no prompt yet: nothing starts, the cursor stays in the prompt
                await pilot.pause(0.1)
                assert app.screen.client is None and app.focused.id == "prompt"
    assert shown == {"with-input": True, "without": False}


def test_finish_screen_snapshot(snap_compare, monkeypatch):
    from engine.export import llama_cpp

    monkeypatch.chdir(ROOT)
    # The same words on any machine, whether llama.cpp is installed yet or not.
    monkeypatch.setattr(llama_cpp, "status", lambda: "GGUF export ready (llama.cpp from llama-cpp-python 0.3.36).")
    assert snap_compare(Host(RECORDED), terminal_size=SIZE)
