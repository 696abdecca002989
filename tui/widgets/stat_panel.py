"""Where the run stands: progress, timing, throughput, memory, learning rate and grad norm."""

from __future__ import annotations

from typing import Optional

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from engine.runs.progress import duration


def clock(seconds: Optional[float]) -> str:
    return "-" if seconds is None else duration(seconds)


def number(value: Optional[float], fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


SPARK_POINTS = 120
LABEL = 11  # the label column
VALUE_WIDTH = 23  # the value column at 80 columns, before the first layout


def fitted(forms: list[str], room: int) -> str:
    """The first (most detailed) form that fits `room`, else the last: a wrapped row would push the
    fixed-height panel's last row out of view."""
    return next((form for form in forms if len(form) <= room), forms[-1])


def price_text(price, room: int) -> str:
    """'$0.69/h (example price, 2025-06)' where it fits, else '$0.69/h*' (* an example, as in the plan)."""
    if price is None:
        return "-"
    return fitted([price.rate(), price.rate(mark_example=False) + ("" if price.mine else "*")], room)


def cost_text(view, room: int) -> str:
    """'$0.69 so far · $1.38 to go' where it fits, else shorter forms of it."""
    from engine.planner.cost import money

    full, price, spent, more = view.cost_short(), view.price(), view.cost_so_far(), view.cost_to_finish()
    if len(full) <= room or price is None or spent is None:
        return full
    spent = money(spent, price.currency)
    return fitted(([f"{spent} · {money(more, price.currency)} to go"] if more is not None else [])
                  + [f"{spent} so far", spent], room)


class StatPanel(Vertical):
    """Call `show(view, memory)` with the run's progress and a memory line."""

    DEFAULT_CSS = """
    StatPanel { height: auto; padding: 0 1; }
    StatPanel #stats { height: 11; }
    StatPanel .spark-label { height: 1; color: $text-muted; margin-top: 1; }
    StatPanel Sparkline { height: 1; }
    """

    _lr_count = 0
    _grad_count = 0

    def compose(self) -> ComposeResult:
        yield Static("", id="stats")
        yield Static("learning rate", classes="spark-label", id="lr-label")
        yield Sparkline([], id="lr-spark")
        yield Static("grad norm", classes="spark-label", id="grad-label")
        yield Sparkline([], id="grad-spark")

    def show(self, view, memory: str) -> None:
        """`view`: the run's `engine.runs.progress.RunProgress`. The state itself is in the docked bar."""
        total = view.total_steps or "?"
        room = self.query_one("#stats", Static).content_size.width - LABEL
        room = room if room > 0 else VALUE_WIDTH
        rows = [
            ("step", f"{view.step} / {total}"),
            ("epoch", number(view.epoch, ".2f")),
            ("elapsed", clock(view.elapsed)),
            ("ETA", clock(view.eta_seconds) if view.live else "-"),
            ("tokens/s", number(view.tokens_per_second, ",.0f")),
            ("samples/s", number(view.samples_per_second, ".2f")),
            ("memory", memory),
            ("loss", number(view.last_loss, ".4f")),
        ]
        if view.gpu:  # a rented GPU costs by the hour (issue 20); a CPU run has nothing to show here
            rows[4:4] = [("cost", cost_text(view, room)), ("price", price_text(view.price(), room))]
        if view.evals:
            rows.append(("eval loss", f"{view.evals[-1][1]:.4f}"))
        # Plain Text, not a rich Table: this redraws at each new event and a Table costs more.
        stats = Text()
        for i, (label, value) in enumerate(rows):
            stats.append(f"{label:<{LABEL}}", style="dim")
            stats.append(value + ("\n" if i < len(rows) - 1 else ""))
        self.query_one("#stats", Static).update(stats, layout=False)  # fixed height: no layout pass

    def show_trends(self, view) -> None:
        """The sparklines: the last SPARK_POINTS values, redrawn with the chart (they change slowly)."""
        if view.learning_rates and len(view.learning_rates) != self._lr_count:
            self._lr_count = len(view.learning_rates)
            self.query_one("#lr-label", Static).update(f"learning rate  {view.learning_rate:.2e}", layout=False)
            self.query_one("#lr-spark", Sparkline).data = view.learning_rates[-SPARK_POINTS:]
        if view.grad_norms and len(view.grad_norms) != self._grad_count:
            self._grad_count = len(view.grad_norms)
            self.query_one("#grad-label", Static).update(f"grad norm  {view.grad_norm:.3f}", layout=False)
            self.query_one("#grad-spark", Sparkline).data = view.grad_norms[-SPARK_POINTS:]
