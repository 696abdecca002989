"""The run's state in one line, docked at the top of the dashboard: visible at any terminal size.

    ● running  step 12 / 24  ▕██████░░░░░░▏ 50%  ETA 3:10  1,204 tok/s    runs/demo

A key press shows at once ("stopping after step 13 …"), before the worker's events confirm it.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets import Static

from engine.runs.progress import duration

STYLES = {
    "running": "bold green", "starting": "bold cyan", "retrying": "bold yellow", "paused": "bold yellow",
    "completed": "bold green", "stopped": "bold yellow", "failed": "bold red", "interrupted": "bold red",
    "stopping": "bold yellow", "pausing": "bold yellow", "resuming": "bold cyan", "waiting": "dim",
}
BAR_CELLS = 12


def progress_bar(step: int, total: int | None) -> str:
    if not total:
        return ""
    filled = round(BAR_CELLS * min(step, total) / total)
    return f"▕{'█' * filled}{'░' * (BAR_CELLS - filled)}▏ {100 * min(step, total) // total}%"


class RunStateBar(Static):
    DEFAULT_CSS = """
    RunStateBar { dock: top; height: 1; padding: 0 1; background: $panel; }
    """

    def __init__(self, run_dir: Path, **kwargs):
        super().__init__("", markup=False, **kwargs)
        self.run_dir = run_dir

    def show(self, view, requested: str = "", controls_here: bool = True, gone: bool = False) -> None:
        word = requested if requested and not view.ended else view.status_word
        if requested == "stopping" and not view.ended:
            detail = f"after step {view.step + 1} …"
        elif requested and not view.ended:
            detail = "after this step …"
        else:
            detail = view.status_detail
        if gone and view.live:
            word, detail = "interrupted", "the worker is gone; press a remedy key or resume from the run folder"
        line = Text()
        line.append("● ", style=STYLES.get(word, "bold"))
        line.append(word, style=STYLES.get(word, "bold"))
        if detail:
            line.append(f" {detail}", style="dim")
        total = view.total_steps
        line.append(f"  step {view.step} / {total or '?'}")
        bar = progress_bar(view.step, total)
        if bar:
            line.append(f"  {bar}")
        if view.live and view.eta_seconds is not None:
            line.append(f"  ETA {duration(view.eta_seconds)}")
        if view.tokens_per_second:
            line.append(f"  {view.tokens_per_second:,.0f} tok/s", style="dim")
        if view.world_size > 1:
            strategy = f" ({view.strategy.upper()})" if view.strategy and view.strategy != "none" else ""
            line.append(f"  {view.world_size} processes{strategy}", style="dim")
        if not controls_here:
            line.append(f"  (started on {view.host}: watching only)", style="dim")
        line.append(f"  {self.run_dir}", style="dim")
        self.update(line, layout=False)  # one docked line: its size never changes
