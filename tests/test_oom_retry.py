"""Out of memory in the worker: the real torch.OutOfMemoryError, injected at a chosen step, is
caught, diagnosed, and the headless replay retries with the cheapest remedy and finishes."""

from __future__ import annotations

import json

import pytest

from tests.conftest import events_of, run_cli, small_session, write_session

pytestmark = pytest.mark.training


def test_oom_is_retried_with_half_the_batch_and_the_run_finishes(tmp_path, monkeypatch):
    session = small_session(
        tmp_path, training__per_device_train_batch_size=4, training__gradient_accumulation_steps=1,
        training__max_steps=4, training__save_steps=1,
    )
    path = write_session(tmp_path, session)
    # The worker raises torch.OutOfMemoryError at step 2 while the batch is 4 or more.
    monkeypatch.setenv("LORA_TUI_INJECT_OOM", "step=2,min_batch=4")
    result = run_cli("--replay", str(path))
    assert result.returncode == 0, result.stderr + result.stdout[-3000:]
    assert "Out of memory: retrying with" in result.stdout

    run_dir = tmp_path / "run"
    events = events_of(run_dir)
    kinds = [e["event"] for e in events]
    finding = next(e for e in events if e["event"] == "finding" and e["kind"] == "oom")
    assert finding["message"].startswith("Out of memory at step 2") and finding["remedies"]
    error = next(e for e in events if e["event"] == "error")
    assert error["kind"] == "oom"
    retry = next(e for e in events if e["event"] == "retry")
    assert retry["remedy"]["changes"] == {
        "training.per_device_train_batch_size": 2, "training.gradient_accumulation_steps": 2}
    assert kinds.index("error") < kinds.index("retry") < len(kinds) - 1
    assert events[-1]["event"] == "end" and events[-1]["status"] == "completed" and events[-1]["step"] == 4

    as_run = json.loads((run_dir / "session.json").read_text())
    assert as_run["training"]["per_device_train_batch_size"] == 2
    assert as_run["training"]["gradient_accumulation_steps"] == 2  # same effective batch
    assert json.loads(path.read_text())["training"]["per_device_train_batch_size"] == 4  # the person's file is theirs
    assert (run_dir / "adapter" / "adapter_config.json").exists()
