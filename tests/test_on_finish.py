"""output.on_finish (issue 20): run once after a successful run whose adapter is saved and checked,
never after a stopped or failed one; its output in the run's worker.log. And training.report_to:
a tracker that is not installed is one sentence before training.

The supervisor here runs a stand-in worker (a few lines of Python writing the events a real worker
writes), so the rules are tested in seconds; tests/test_trackers.py trains for real."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.session.schema import Session, load_session, save_session
from engine.training.preflight import check_trackers
from engine.training.supervisor import Supervisor, saved_output_problem
from tests.conftest import DEMO_DATA, events_of, small_session, write_session

FAKE_WORKER = r'''
import sys
from pathlib import Path
from engine.runs.events import EventWriter
run_dir, outcome = Path(sys.argv[1]), sys.argv[2]
events = EventWriter(run_dir)
events.emit("start", total_steps=2, step=0, world_size=1)
if outcome == "completed":
    adapter = run_dir / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    events.emit("end", status="completed", step=2, adapter_dir=str(adapter))
elif outcome == "no_weights":
    adapter = run_dir / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    events.emit("end", status="completed", step=2, adapter_dir=str(adapter))
elif outcome == "stopped":
    events.emit("end", status="stopped", step=1, checkpoint=None)
else:
    events.emit("error", message="the worker failed", kind="crash")
    sys.exit(1)
'''


class FakeWorkerSupervisor(Supervisor):
    outcome = "completed"

    def worker_command(self, backend, resume):
        command, env, log = super().worker_command(backend, resume)
        return [sys.executable, "-c", FAKE_WORKER, str(self.run_dir), self.outcome], env, log


def replay_with(tmp_path: Path, outcome: str, on_finish: str | None) -> tuple[int | None, Path, list[str]]:
    marker = tmp_path / "finished.txt"
    command = on_finish.replace("MARKER", str(marker)) if on_finish else None
    path = write_session(tmp_path, small_session(tmp_path, output__on_finish=command))
    session = load_session(path)
    lines: list[str] = []
    supervisor = FakeWorkerSupervisor(session, Path(session.output.dir), path, lines.append)
    supervisor.outcome = outcome
    try:
        code = supervisor.run(resume=False, oom_retry=False)
    except UserError:
        code = None
    return code, marker, lines


def test_on_finish_runs_once_after_a_successful_run(tmp_path):
    code, marker, lines = replay_with(tmp_path, "completed", "echo done >> MARKER; echo said-to-the-log")
    assert code == 0
    assert marker.read_text() == "done\n"  # once
    run_dir = tmp_path / "run"
    log = (run_dir / "worker.log").read_text()
    assert "--- output.on_finish: echo done" in log and "said-to-the-log" in log and "exited with code 0" in log
    event = [e for e in events_of(run_dir) if e["event"] == "on_finish"]
    assert len(event) == 1 and event[0]["exit_code"] == 0
    assert any("output.on_finish finished" in line for line in lines)


@pytest.mark.parametrize("outcome", ["stopped", "failed"])
def test_on_finish_never_runs_after_a_stopped_or_failed_run(tmp_path, outcome):
    code, marker, _ = replay_with(tmp_path, outcome, "echo done >> MARKER")
    assert code != 0
    assert not marker.exists()
    assert not [e for e in events_of(tmp_path / "run") if e["event"] == "on_finish"]


def test_on_finish_waits_for_a_checked_adapter(tmp_path):
    code, marker, lines = replay_with(tmp_path, "no_weights", "echo done >> MARKER")
    assert code == 0 and not marker.exists()
    assert any("output.on_finish was not run" in line and "holds no weights" in line for line in lines)


def test_a_failing_command_is_reported_not_fatal(tmp_path):
    code, _, lines = replay_with(tmp_path, "completed", "exit 3")
    assert code == 0
    assert any("exited with code 3" in line for line in lines)


def test_saved_output_problem():
    assert saved_output_problem({}) == "the run's end names no saved adapter or model"
    assert "is missing" in saved_output_problem({"adapter_dir": "/nonexistent/adapter"})


def test_old_sessions_load_and_new_fields_round_trip(tmp_path):
    old = Session.model_validate({"dataset": {"path": str(DEMO_DATA)}})
    assert old.output.on_finish is None and old.training.report_to == "none" and old.training.trackers == []
    new = old.with_changes({"output.on_finish": "sudo shutdown -h +10", "training.report_to": ["tensorboard"]})
    saved = save_session(new, tmp_path / "s.json")
    again = load_session(saved)
    assert again.output.on_finish == "sudo shutdown -h +10" and again.training.trackers == ["tensorboard"]


def test_report_to_names_are_trls(tmp_path):
    for bad in ("tensorbord", ["none", "wandb"]):
        path = write_session(tmp_path, small_session(tmp_path, training__report_to=bad))
        with pytest.raises(UserError) as caught:
            load_session(path)
        assert "report_to" in str(caught.value)


def test_a_tracker_that_is_not_installed_is_one_sentence(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    session = Session.model_validate({"dataset": {"path": str(DEMO_DATA)}, "training": {"report_to": ["tensorboard", "wandb"]}})
    with pytest.raises(UserError) as caught:
        check_trackers(session)
    assert str(caught.value) == ('training.report_to names "wandb", which is not installed in this environment; '
                                 "install it (pip install wandb) or remove it from report_to.")
    check_trackers(Session.model_validate({"dataset": {"path": str(DEMO_DATA)}, "training": {"report_to": "tensorboard"}}))


def test_review_step_sets_and_shows_on_finish(tmp_path, monkeypatch):
    import asyncio

    from textual.widgets import Input, Static
    from tui_helpers import DEMO_DATA as DEMO
    from tui_helpers import RTX_4090, settle

    from tui.app import build_app

    monkeypatch.setenv("LORA_TUI_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("LORA_TUI_HARDWARE", str(RTX_4090))

    async def body():
        app = build_app(dataset=str(DEMO), offer_resume=False, autosave=False)
        async with app.run_test(size=(120, 40)) as pilot:
            app.goto("review", check=False)
            await settle(pilot)
            assert app.draft.session.output.on_finish is None  # off by default
            field = app.screen.query_one("#on-finish", Input)
            field.value = "runpodctl stop pod $RUNPOD_POD_ID"
            await pilot.pause(0.2)
            assert app.draft.session.output.on_finish == "runpodctl stop pod $RUNPOD_POD_ID"
            summary = str(app.screen.query_one("#summary", Static).render())
            assert "When finished runs runpodctl stop pod $RUNPOD_POD_ID once" in summary
            field.value = ""
            await pilot.pause(0.2)
            assert app.draft.session.output.on_finish is None

    asyncio.run(body())


def test_a_blank_on_finish_is_off():
    from engine.session.schema import session_from_dict

    blank = session_from_dict({"dataset": {"path": "d.jsonl"}, "output": {"on_finish": "   "}})
    assert blank.output.on_finish is None  # not an empty shell command run after the run
    assert session_from_dict({"dataset": {"path": "d.jsonl"}, "output": {"on_finish": " echo done "}}).output.on_finish == "echo done"
