"""A horizontal bar for memory: how much of a budget (VRAM, RAM, disk) a figure takes.

Drawn with block characters and the theme's colours (component classes), so it reads over SSH
without truecolor and follows the app's theme.
"""

from __future__ import annotations

from typing import Optional

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


class UsageBar(Widget):
    """`label  ████████░░░░  12.3 / 24.0 GB  caption`; red when the figure exceeds the budget."""

    COMPONENT_CLASSES = {"usagebar--ok", "usagebar--warn", "usagebar--over", "usagebar--empty", "usagebar--label"}
    DEFAULT_CSS = """
    UsageBar { height: 1; width: 1fr; }
    UsageBar > .usagebar--ok { color: $success; }
    UsageBar > .usagebar--warn { color: $warning; }
    UsageBar > .usagebar--over { color: $error; }
    UsageBar > .usagebar--empty { color: $foreground 25%; }
    UsageBar > .usagebar--label { text-style: bold; }
    """

    value: reactive[Optional[float]] = reactive(None)
    total: reactive[Optional[float]] = reactive(None)
    caption: reactive[str] = reactive("")

    def __init__(
        self,
        label: str,
        value: Optional[float] = None,
        total: Optional[float] = None,
        caption: str = "",
        label_width: int = 10,
        warn_at: float = 0.9,
        unit: str = "GB",
        caption_width: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.label = label
        self.label_width = label_width
        self.warn_at = warn_at
        self.unit = unit
        self.caption_width = caption_width  # pads captions so that bars in a column line up
        self.set_reactive(UsageBar.value, value)
        self.set_reactive(UsageBar.total, total)
        self.set_reactive(UsageBar.caption, caption)

    def update(self, value: Optional[float], total: Optional[float], caption: str = "") -> None:
        self.value, self.total, self.caption = value, total, caption

    @property
    def fraction(self) -> Optional[float]:
        if self.value is None or not self.total:
            return None
        return self.value / self.total

    def render(self) -> Text:
        label = self.label[: self.label_width].ljust(self.label_width)
        if self.value is None:
            figures = "  …"
        elif self.total:
            figures = f" {self.value:6.1f} / {self.total:.1f} {self.unit}"
        else:
            figures = f" {self.value:6.1f} {self.unit}"
        caption = f"  {self.caption}".ljust(self.caption_width + 2) if self.caption or self.caption_width else ""
        width = max(6, self.size.width - len(label) - len(figures) - len(caption) - 1)
        text = Text()
        text.append(label, self.get_component_rich_style("usagebar--label"))
        text.append(" ")
        fraction = self.fraction
        if fraction is None:
            text.append("·" * width, self.get_component_rich_style("usagebar--empty"))
        else:
            state = "over" if fraction > 1 else "warn" if fraction >= self.warn_at else "ok"
            filled = min(width, round(min(fraction, 1.0) * width))
            if fraction > 0 and filled == 0:
                filled = 1  # a non-zero figure is never drawn as empty
            text.append("█" * filled, self.get_component_rich_style(f"usagebar--{state}"))
            text.append("░" * (width - filled), self.get_component_rich_style("usagebar--empty"))
        text.append(figures)
        text.append(caption)
        return text
