"""Runs outlive the terminal: the process that started a run can die and the run goes on; a
worker killed with -9 leaves a checkpoint that a new `lora-tui` resumes, step count carrying on."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, events_of, small_session

pytestmark = pytest.mark.training


def _wait_for(predicate, timeout=900, every=0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def test_run_outlives_its_launcher_and_a_new_lora_tui_resumes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_TUI_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("LORA_TUI_HARDWARE", "")
    from engine.runs.registry import list_runs, run_state
    from engine.session.schema import session_from_dict

    session = session_from_dict(small_session(tmp_path, training__max_steps=8, training__save_steps=2))
    session_file = tmp_path / "s.json"
    session_file.write_text(session.to_json())
    # A stand-in for the TUI process: it starts the run the way the review screen does, then is killed.
    launcher = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from engine.runs.registry import launch; from engine.session.schema import load_session;"
         "launch(load_session(sys.argv[1])); time.sleep(600)", str(session_file)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    run_dir = tmp_path / "run"
    _wait_for(lambda: any(e["event"] == "log" for e in events_of(run_dir)))
    launcher.kill()  # the terminal / SSH connection goes away
    launcher.wait()

    # The run goes on without it: a checkpoint arrives, then the worker is killed with -9.
    checkpoint = _wait_for(lambda: next((e for e in events_of(run_dir) if e["event"] == "checkpoint"), None))
    worker_pid = next(e["pid"] for e in events_of(run_dir) if e["event"] == "start")
    os.kill(worker_pid, signal.SIGKILL)
    state = _wait_for(lambda: (s := run_state(run_dir)).status in ("failed", "interrupted") and s)
    assert state.resumable and state.last_checkpoint is not None
    crash = events_of(run_dir)[-1]
    assert crash["event"] == "error" and "killed by signal 9" in crash["message"]
    resumed_from = int(state.last_checkpoint.name.rpartition("-")[2])
    assert resumed_from >= checkpoint["step"]
    assert [s.run_dir for s in list_runs()] == [run_dir]

    # A new lora-tui lists the run; `r` resumes it and the dashboard watches it.
    from tui.app import build_app
    from tui.screens.runs import RunsScreen
    from tui.screens.training import TrainingScreen

    async def drive():
        app = build_app(offer_resume=True, autosave=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await _until(pilot, lambda: isinstance(app.screen, RunsScreen))
            assert str(run_dir) in str(app.screen.query_one("#runs-list").get_option_at_index(0).prompt)
            await pilot.press("r")
            await _until(pilot, lambda: isinstance(app.screen, TrainingScreen))

    asyncio.run(drive())
    _wait_for(lambda: run_state(run_dir).status == "completed")
    events = events_of(run_dir)
    starts = [e for e in events if e["event"] == "start"]
    assert starts[-1]["step"] == resumed_from and starts[-1]["resume_from"].endswith(f"checkpoint-{resumed_from}")
    assert events[-1]["event"] == "end" and events[-1]["step"] == 8


async def _until(pilot, condition, timeout=60):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError("the screen did not appear")
        await pilot.pause(0.2)
