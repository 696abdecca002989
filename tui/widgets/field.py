"""A labelled input whose error message sits on the field itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, Static


class FormField(Vertical):
    """Label, input and an error line; `check(text) -> error or None` runs on every change."""

    DEFAULT_CSS = """
    FormField { height: auto; width: 1fr; min-width: 24; padding: 0 1 0 0; }
    FormField > Horizontal { height: auto; }
    FormField Label { width: 20; padding: 0 1 0 0; color: $text-muted; }
    FormField Input { width: 1fr; }
    FormField .field-error { color: $text-error; height: auto; padding-left: 20; }
    FormField .field-error.-empty { display: none; }
    FormField.-invalid Input { background: $error 30%; }
    """

    def __init__(self, label: str, value: str, field_id: str, placeholder: str = "", tooltip: Optional[str] = None, **kwargs):
        super().__init__(id=f"field-{field_id}", **kwargs)
        self.label = label
        self.field_id = field_id
        self.initial = value
        self.placeholder = placeholder
        self.help = tooltip
        self.error: Optional[str] = None

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label(self.label)
            yield Input(self.initial, placeholder=self.placeholder, id=self.field_id, tooltip=self.help, compact=True)
        yield Static("", classes="field-error -empty")

    @property
    def input(self) -> Input:
        return self.query_one(Input)

    @property
    def value(self) -> str:
        return self.input.value

    def set_value(self, text: str, same: Optional[Callable[[str], bool]] = None) -> None:
        """Replace the text unless the person is mid-edit on an invalid value (never lose input),
        or it already means the same (`same(current_text)`: keep "1e-4" as typed, not "0.0001")."""
        if same is not None and self.error is None:
            try:
                if same(self.input.value):
                    return
            except ValueError:
                pass
        if self.error is None and self.input.value != text:
            with self.input.prevent(Input.Changed):
                self.input.value = text

    def show_error(self, error: Optional[str]) -> None:
        self.error = error
        line = self.query_one(".field-error", Static)
        line.update(error or "")
        line.set_class(not error, "-empty")
        self.set_class(bool(error), "-invalid")


Checker = Callable[[str], Optional[str]]
