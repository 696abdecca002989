"""At start: runs still going or interrupted. Watch one (re-attach from its events) or resume it.

A run started from the wizard outlives the terminal (its supervisor is its own process group),
so a person whose SSH connection dropped runs `lora-tui` again and lands here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from tui.widgets.footer import StableFooter


def describe_run(state) -> str:
    total = f"/{state.total_steps}" if state.total_steps else ""
    checkpoint = f", last checkpoint {state.last_checkpoint.name}" if state.last_checkpoint else ""
    return f"[b]{state.status}[/b] at step {state.step}{total}{checkpoint}  {escape(str(state.run_dir))}"


class RunsScreen(ModalScreen[Optional[tuple[str, Path]]]):
    """Dismisses with ("watch", run_dir), ("resume", run_dir) or None (go on to the wizard)."""

    BINDINGS = [
        Binding("enter,w", "choose('watch')", "Watch", id="runs.watch"),
        Binding("r", "choose('resume')", "Resume", id="runs.resume"),
        Binding("escape,n", "dismiss_none", "Wizard", id="runs.wizard"),
    ]

    def __init__(self, runs: list):
        super().__init__()
        self.runs = runs

    def compose(self) -> ComposeResult:
        with Vertical(id="runs"):
            yield Static("Runs still going or interrupted", classes="panel-title")
            yield OptionList(
                *[Option(describe_run(state), id=str(i)) for i, state in enumerate(self.runs)], id="runs-list"
            )
            yield Static(
                "enter: watch the run (its dashboard)   r: resume an interrupted run from its last checkpoint   "
                "escape: go on to the wizard",
                classes="muted",
            )
        yield StableFooter()

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def _selected(self):
        index = self.query_one(OptionList).highlighted
        return self.runs[index] if index is not None and index < len(self.runs) else None

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_choose("watch")

    def action_choose(self, what: str) -> None:
        state = self._selected()
        if state is None:
            return
        if what == "resume" and not state.resumable:
            reason = "it is still running" if state.status in ("running", "paused") else "it has no checkpoint"
            self.notify(f"This run cannot be resumed: {reason}.", severity="warning")
            return
        self.dismiss((what, state.run_dir))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
