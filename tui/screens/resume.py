"""At start: continue the last session in progress? (Runs to re-attach to come first: runs.py.)"""

from __future__ import annotations

from typing import Optional

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from engine.session.draft import WizardDraft
from tui.widgets.footer import StableFooter


class ResumeScreen(ModalScreen[Optional[str]]):
    """Dismisses with "continue", "fresh", or "run:<folder>" to watch an interrupted run."""

    BINDINGS = [
        Binding("c", "answer('continue')", "Continue", id="resume.continue"),
        Binding("n", "answer('fresh')", "Start fresh", id="resume.fresh"),
        Binding("escape", "answer('fresh')", "Start fresh", show=False, id="resume.fresh"),
    ]

    def __init__(self, draft: WizardDraft):
        super().__init__()
        self.draft = draft

    def compose(self) -> ComposeResult:
        with Vertical(id="resume"):
            yield Static("Continue where you left off?", classes="panel-title")
            yield Static(self.draft.describe(), id="resume-what")
            with Horizontal(id="resume-buttons"):
                yield Button("Continue (c)", id="continue", variant="primary", compact=True)
                yield Button("Start fresh (n)", id="fresh", compact=True)
        yield StableFooter()

    def on_mount(self) -> None:
        self.query_one("#continue", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)

    def action_answer(self, answer: str) -> None:
        self.dismiss(answer)
