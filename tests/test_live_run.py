"""The live run seen from outside the worker: typed events, the one fold, the step counter, and
`lora-tui runs / stop / attach` on run folders (written event by event, as a worker writes them)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.runs.event_models import check_event
from engine.runs.events import EventWriter, read_events
from engine.runs.progress import progress_of
from engine.runs.progress_lines import StepCounter, step_line
from engine.runs.registry import STOP_FILE, SUPERVISOR_PID_FILE, remember_run
from tests.conftest import run_cli

FIXTURES = Path(__file__).parent / "fixtures" / "events"


def write_live_run(run_dir: Path, steps: int = 3, total: int = 10) -> None:
    writer = EventWriter(run_dir)
    writer.emit("start", total_steps=total, step=0, resume_from=None, pid=None, world_size=1)
    for step in range(1, steps + 1):
        writer.emit("step", step=step, total_steps=total, elapsed=1.5 * step, samples=4 * step, tokens=120 * step,
                    tokens_per_second=80.0, eta_seconds=1.5 * (total - step))
    writer.close()


# -- the typed stream ---------------------------------------------------------------------------------

def test_a_bad_event_is_refused_when_written_and_skipped_when_read(tmp_path):
    writer = EventWriter(tmp_path)
    with pytest.raises(ValueError, match="'step' event with a bad step"):
        writer.emit("step", step="three", elapsed=1.0)
    with pytest.raises(ValueError, match="bad remedies"):
        writer.emit("finding", kind="nan", message="Loss is NaN", remedies=[{"label": "no id"}])
    writer.emit("log", step=1, loss=2.5)
    writer.close()
    with open(tmp_path / "events.jsonl", "a") as handle:  # what a newer or broken writer could leave
        handle.write(json.dumps({"event": "log", "step": "x"}) + "\n")
        handle.write(json.dumps({"event": "sparkle", "colour": "gold"}) + "\n")
        handle.write("[1, 2]\n")
    events = read_events(tmp_path)
    assert [e["event"] for e in events] == ["log", "sparkle"]  # the bad log skipped, the unknown kind kept
    assert events[1]["colour"] == "gold"


def test_the_recorded_runs_read_back_valid():
    for run in ("finished", "memorise"):
        raw = [json.loads(line) for line in (FIXTURES / run / "events.jsonl").read_text().splitlines() if line.strip()]
        assert len(read_events(FIXTURES / run)) == len(raw)
        assert all(check_event(event)["event"] == event["event"] for event in raw)


def test_step_events_move_progress_between_loss_points(tmp_path):
    write_live_run(tmp_path, steps=3)
    progress = progress_of(read_events(tmp_path))
    assert (progress.step, progress.total_steps, progress.status_word) == (3, 10, "running")
    assert progress.eta_seconds == 10.5 and progress.tokens_seen == 360 and progress.train == []
    assert step_line(progress).startswith("step 3/10 ▕██████") and "ETA 0:10" in step_line(progress)


def test_the_step_counter_rewrites_one_line_in_a_terminal_and_prints_plain_lines_when_piped(tmp_path, capsys):
    write_live_run(tmp_path, steps=3)
    progress = progress_of(read_events(tmp_path))
    printed: list[str] = []
    piped = StepCounter(printed.append, interactive=False)
    for _ in range(5):
        piped.step(progress)
    assert printed == [step_line(progress)]  # once, then not again within PIPED_STEP_SECONDS
    terminal = StepCounter(printed.append, interactive=True)
    terminal.step(progress)
    terminal.step(progress)
    terminal.line("checkpoint saved")
    written = capsys.readouterr().out
    assert written.count("\r\x1b[K") == 3 and "\n" not in written  # rewritten in place, cleared for the line
    assert printed[-1] == "checkpoint saved"


# -- runs, stop, attach ---------------------------------------------------------------------------------

@pytest.fixture
def live_run(tmp_path, monkeypatch):
    """A run folder at step 3 of 10 whose supervisor is a live process (a sleep: nothing trains)."""
    monkeypatch.setenv("LORA_TUI_STATE", str(tmp_path / "state"))
    run_dir = tmp_path / "run"
    write_live_run(run_dir)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (run_dir / SUPERVISOR_PID_FILE).write_text(f"{sleeper.pid}\n")
    remember_run(run_dir)
    yield run_dir
    sleeper.kill()
    sleeper.wait()


def test_runs_lists_state_step_and_age(live_run, tmp_path):
    finished = tmp_path / "done"
    writer = EventWriter(finished)
    writer.emit("start", total_steps=2, step=0)
    writer.emit("end", status="completed", step=2)
    writer.close()
    remember_run(finished)
    result = run_cli("runs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["state", "step", "last", "event", "run", "folder"]
    assert lines[1].split()[:4] == ["completed", "2", "/", "2"] and lines[1].endswith(str(finished))
    assert lines[2].split()[:4] == ["running", "3", "/", "10"] and "just now" in lines[2]


def test_stop_asks_a_live_run_and_says_so(live_run):
    result = run_cli("stop", str(live_run))
    assert result.returncode == 0, result.stderr
    assert (live_run / STOP_FILE).exists()
    assert "stop after step 4" in result.stdout and "--resume" in result.stdout


def test_stop_on_a_finished_run_or_a_plain_folder(tmp_path):
    writer = EventWriter(tmp_path / "done")
    writer.emit("end", status="completed", step=5)
    writer.close()
    result = run_cli("stop", str(tmp_path / "done"))
    assert result.returncode == 0 and "is not running (completed at step 5)" in result.stdout
    assert not (tmp_path / "done" / STOP_FILE).exists()
    result = run_cli("stop", str(tmp_path))
    assert result.returncode == 2 and "not a run folder" in result.stderr and "Traceback" not in result.stderr


def test_attach_watches_a_live_run_and_stop_reaches_it(live_run):
    from textual.widgets import Static

    from tui.attach import AttachApp
    from tui.screens.training import TrainingScreen

    async def watch():
        app = AttachApp(live_run)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.3)
            assert isinstance(app.screen, TrainingScreen)
            bar = str(app.screen.query_one("#run-state", Static).render())
            assert "running" in bar and "step 3 / 10" in bar
            writer = EventWriter(live_run)  # the worker takes a step
            writer.emit("step", step=4, total_steps=10, elapsed=6.0, samples=16, tokens=480, eta_seconds=9.0)
            writer.close()
            await pilot.pause(0.8)  # one poll of the file's size
            assert "step 4 / 10" in str(app.screen.query_one("#run-state", Static).render())
            await pilot.press("s")
            assert (live_run / STOP_FILE).exists()

    asyncio.run(watch())


def test_attach_on_a_finished_run_opens_its_finish_screen():
    from tui.attach import AttachApp
    from tui.screens.finish import FinishScreen

    async def watch():
        app = AttachApp(FIXTURES / "finished")
        async with app.run_test(size=(120, 40)) as pilot:
            for _ in range(20):
                await pilot.pause(0.1)
                if isinstance(app.screen, FinishScreen):
                    break
            assert isinstance(app.screen, FinishScreen)

    asyncio.run(watch())


def test_attach_refuses_a_folder_that_is_no_run(tmp_path):
    result = run_cli("attach", str(tmp_path))
    assert result.returncode == 2 and "not a run folder" in result.stderr


def test_a_distributed_run_shows_its_world_size_and_strategy(tmp_path):
    from textual.widgets import Static

    from tui.attach import AttachApp

    writer = EventWriter(tmp_path)
    writer.emit("start", total_steps=10, step=0, world_size=2, strategy="fsdp")
    writer.close()
    progress = progress_of(read_events(tmp_path))
    assert (progress.world_size, progress.strategy) == (2, "fsdp")

    async def watch():
        app = AttachApp(tmp_path)
        async with app.run_test(size=(160, 24)) as pilot:
            await pilot.pause(0.3)
            return str(app.screen.query_one("#run-state", Static).render())

    assert "2 processes (FSDP)" in asyncio.run(watch())
