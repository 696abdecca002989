"""training.report_to "tensorboard" on a real (2-step) run: event files in RUN_DIR/tensorboard, where
`tensorboard --logdir runs/` finds them; and output.on_finish runs once after it (issue 20)."""

from __future__ import annotations

import pytest

from tests.conftest import events_of, run_cli, small_session, write_session

pytestmark = pytest.mark.training


def test_tensorboard_files_in_the_run_folder_and_on_finish_once(tmp_path):
    marker = tmp_path / "finished.txt"
    session = small_session(tmp_path, backend="peft", training__max_steps=2, training__report_to="tensorboard",
                            output__on_finish=f"echo ran >> {marker}")
    result = run_cli("--replay", str(write_session(tmp_path, session)))
    assert result.returncode == 0, result.stderr + result.stdout[-3000:]
    run_dir = tmp_path / "run"
    files = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert files and files[0].stat().st_size > 0
    assert marker.read_text() == "ran\n"
    assert "output.on_finish finished" in result.stdout
    kinds = [e["event"] for e in events_of(run_dir)]
    assert kinds.index("end") < kinds.index("on_finish")
