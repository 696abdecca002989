"""What every wizard step shares: the progress line, the footer keys, back and next.

A step screen is created once and kept (installed on the app), so going back and forward never
loses what was typed. `commit()` writes the screen's values into the session in progress; the app
saves it to disk after every step.
"""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Optional

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from engine.errors import UserError
from engine.session.draft import STEP_TITLES
from tui.widgets.footer import StableFooter
from tui.widgets.steps import StepBar

if TYPE_CHECKING:
    from tui.app import LoraTuiApp

log = logging.getLogger("lora_tui.wizard")


def explain(error: BaseException) -> str:
    """One sentence for the screen; the traceback of an unexpected error goes to the log file."""
    if isinstance(error, UserError):
        return str(error)
    log.error("unexpected error\n%s", "".join(traceback.format_exception(error)))
    return f"Unexpected {type(error).__name__}: {error} (details in the wizard log)."


class BackgroundWork:
    """Long work runs in thread workers that return their result; one handler routes it.

    A worker in group "inspect" ends in `inspect_done(result)` on success and in
    `inspect_failed(error)` on failure (by default: `work_failed`, one sentence on the screen).
    Nothing in a worker touches the UI, so no `call_from_thread` and no try/except per worker. A
    worker replaced by a newer one of its group (`exclusive=True`) is cancelled: its result is
    dropped, never shown over the newer one's.
    """

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state == WorkerState.SUCCESS:
            handler = getattr(self, f"{worker.group}_done", None)
            if handler is not None:
                handler(worker.result)
        elif event.state == WorkerState.ERROR and worker.error is not None:
            handler = getattr(self, f"{worker.group}_failed", None) or self.work_failed
            handler(worker.error)

    def work_failed(self, error: BaseException) -> None:
        self.notify(explain(error), severity="error", timeout=10)  # type: ignore[attr-defined]


class StepScreen(BackgroundWork, Screen):
    """A wizard step. Subclasses set STEP, write `compose_body`, `commit` and `on_show_step`."""

    STEP = ""
    HELP = ""
    BINDINGS = [
        Binding("ctrl+n", "next_step", "Next", id="wizard.next", priority=True),
        Binding("escape", "back_step", "Back", id="wizard.back"),
    ]

    @property
    def wizard(self) -> LoraTuiApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield StepBar(self.STEP)
        with VerticalScroll(classes="step-body"):
            yield Static(STEP_TITLES[self.STEP], classes="step-title")
            if self.HELP:
                yield Static(self.HELP, classes="step-help")
            yield from self.compose_body()
        yield Static("", id="step-message", classes="step-message -empty")
        yield StableFooter()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_resize(self, event) -> None:
        # No media queries in Textual CSS: a class lets the stylesheet stack columns on 80 columns.
        self.set_class(self.size.width < 100, "-narrow")

    def on_screen_resume(self) -> None:
        self.on_show_step()

    def on_show_step(self) -> None:
        """Refresh from the session (another step may have changed it)."""

    def commit(self, strict: bool) -> Optional[str]:
        """Write this screen's values into the session. With `strict` (going forward) return a
        sentence that says what is missing, which keeps the person on this step."""
        return None

    def parsed_field(self, event):
        """(field, section, name, value) for a FormField's Input.Changed, or None when the text
        does not parse (the field then shows why) or the input is not a form field."""
        from engine.session.edits import parse_field
        from tui.widgets.field import FormField

        field = next((f for f in self.query(FormField) if f.input is event.input), None)
        if field is None:
            return None
        section, name = field.field_id.split("-", 1)
        try:
            value = parse_field(section, name, event.value)
        except ValueError as error:
            field.show_error(str(error))
            return None
        return field, section, name, value

    def work_failed(self, error: BaseException) -> None:
        self.say(explain(error), error=True)

    def say(self, message: str = "", error: bool = False) -> None:
        """The step's status line, just above the footer."""
        line = self.query_one("#step-message", Static)
        line.update(Text(message))  # plain text: a message may hold brackets ("[Errno 2]")
        line.set_class(not message, "-empty")
        line.set_class(error, "-error")

    def action_next_step(self) -> None:
        self.wizard.go_next()

    def action_back_step(self) -> None:
        self.wizard.go_back()
