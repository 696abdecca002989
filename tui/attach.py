"""`lora-tui attach RUN_DIR`: the training dashboard on any run folder, live, stopped or finished.

A run started headless over SSH (`lora-tui --replay`) is watched the same way as one started
from the wizard; when it completes, the finish screen follows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from textual.app import App


class AttachApp(App[int]):
    CSS_PATH = "styles/app.tcss"
    TITLE = "lora-tui"

    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir = run_dir

    def on_mount(self) -> None:
        from tui.screens.training import TrainingScreen

        self.sub_title = str(self.run_dir)
        self.push_screen(TrainingScreen(self.run_dir))

    def on_training_screen_run_finished(self, message) -> None:
        if message.status == "completed":
            from tui.screens.finish import FinishScreen

            self.push_screen(FinishScreen(message.run_dir))


def attach_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lora-tui attach", description="Watch a run folder: live loss, progress, troubleshooting, finish."
    )
    parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    from engine.runs.commands import run_folder

    run_dir = run_folder(args.run_dir)
    AttachApp(run_dir).run()
    return 0
