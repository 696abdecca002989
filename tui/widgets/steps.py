"""The wizard's progress line: where you are among the seven steps."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from engine.session.draft import STEP_TITLES, STEPS

SHORT_TITLES = {"target_modules": "Modules", "hyperparameters": "Hyperparams"}


class StepBar(Widget):
    """` 1 Hardware › 2 Model › [3 Method] › …`, shortened to fit 80 columns."""

    COMPONENT_CLASSES = {"stepbar--current", "stepbar--done", "stepbar--todo"}
    DEFAULT_CSS = """
    StepBar { height: 1; width: 1fr; background: $panel; }
    StepBar > .stepbar--current { background: $accent; color: $text; text-style: bold; }
    StepBar > .stepbar--done { color: $text-success; }
    StepBar > .stepbar--todo { color: $text-muted; }
    """

    def __init__(self, current: str, **kwargs):
        super().__init__(**kwargs)
        self.current = current

    def _labels(self, titles: dict[str, str], numbers_only: bool) -> list[tuple[str, str]]:
        index = STEPS.index(self.current) if self.current in STEPS else -1
        parts = []
        for i, step in enumerate(STEPS):
            state = "current" if i == index else "done" if i < index else "todo"
            shown = f" {i + 1} {titles[step]} " if (state == "current" or not numbers_only) else f" {i + 1} "
            parts.append((shown, state))
        return parts

    def render(self) -> Text:
        width = self.size.width or 120
        for titles, numbers_only in ((STEP_TITLES, False), ({**STEP_TITLES, **SHORT_TITLES}, False), (STEP_TITLES, True)):
            parts = self._labels(titles, numbers_only)
            if sum(len(p) for p, _ in parts) + 2 * (len(parts) - 1) <= width:
                break
        text = Text(no_wrap=True, overflow="ellipsis")
        for i, (label, state) in enumerate(parts):
            if i:
                text.append("› ", self.get_component_rich_style("stepbar--todo"))
            text.append(label, self.get_component_rich_style(f"stepbar--{state}"))
        return text
