"""Train and eval loss over steps, drawn with textual-plotext.

Drawing a plotext figure, parsing its ANSI output and cutting it into styled lines costs tens of
milliseconds, which would stall the event loop (keys, the other panels) on every redraw. So all of
that happens in a worker thread, down to the finished lines (Textual's line API), and the widget
only hands out the last finished lines; a redraw asked for while one is being built is folded into
the next build.
"""

from __future__ import annotations

import threading
from typing import Optional

from rich.segment import Segment
from rich.text import Text
from textual import work
from textual.strip import Strip
from textual_plotext import PlotextPlot

from tui.screens.base import BackgroundWork

# Braille gives two dots per cell across: more points than that only cost time.
POINTS_PER_CELL = 2
MAX_POINTS = 400


def thin(points: list[tuple[float, float]], limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    """Every k-th point (and always the last), so a 100k-step run draws as fast as a short one."""
    if len(points) <= limit:
        return list(points)
    stride = -(-len(points) // limit)
    thinned = points[::stride]
    if thinned[-1] is not points[-1]:
        thinned.append(points[-1])
    return thinned


class LossChart(BackgroundWork, PlotextPlot):
    """Call `show(train, evals)` with (step, loss) pairs; the chart redraws off the event loop."""

    DEFAULT_CSS = """
    LossChart { height: 1fr; min-height: 8; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._train: list[tuple[float, float]] = []
        self._evals: list[tuple[float, float]] = []
        self._lines: list[Strip] = []
        self._rendered_key: Optional[tuple] = None
        self._lock = threading.Lock()
        self._building = False
        self._again = False
        self.builds = 0  # finished figures, for tests and benchmarks

    @property
    def drawing(self) -> bool:
        """A figure is being built in a thread right now."""
        return self._building

    @property
    def points(self) -> tuple[int, int]:
        """(train, eval) points the chart was last given, after thinning."""
        return len(self._train), len(self._evals)

    def show(self, train: list[tuple[float, float]], evals: list[tuple[float, float]]) -> None:
        limit = max(50, min(MAX_POINTS, self.size.width * POINTS_PER_CELL))
        self._train, self._evals = thin(train, limit), thin(evals, limit)
        self._request_build()

    def on_resize(self) -> None:
        self._request_build()

    def _request_build(self) -> None:
        if not self.is_mounted or self.size.width <= 0 or self.size.height <= 0:
            return
        with self._lock:
            if self._building:
                self._again = True
                return
            self._building = True
        key = (self.size.width, self.size.height, self._get_plotext_theme_name(self.app.theme))
        self._build(self.app, key, list(self._train), list(self._evals))

    @work(thread=True, group="chart", exit_on_error=False)
    def _build(self, app, key: tuple, train: list, evals: list) -> tuple:
        # `app` comes from the event loop: `self.app` is not reliable in a thread once it closes.
        try:
            lines = self._strips(app, key, self._figure(key, train, evals))
        finally:
            with self._lock:
                self._building = False
                again, self._again = self._again, False
        return key, lines, again

    def chart_done(self, result: tuple) -> None:
        self._built(*result)

    def chart_failed(self, error: BaseException) -> None:
        pass  # a figure that would not draw leaves the last one up; the next request tries again

    def _built(self, key: tuple, lines: list[Strip], again: bool) -> None:
        self._lines, self._rendered_key = lines, key
        self.builds += 1
        self.refresh()
        if again or key[:2] != (self.size.width, self.size.height):
            self._request_build()

    def _figure(self, key: tuple, train: list, evals: list) -> Text:
        width, height, theme = key
        plt = self.plt
        plt.clear_data()
        plt.title("Loss")
        plt.xlabel("step")
        if train:
            xs, ys = zip(*train)
            plt.plot(list(xs), list(ys), label="train", marker="braille", color="cyan")
        if evals:
            xs, ys = zip(*evals)
            plt.plot(list(xs), list(ys), label="eval", marker="braille", color="orange")
            plt.scatter(list(xs), list(ys), marker="●", color="orange")
        if not train and not evals:
            plt.xlim(0, 1)
            plt.ylim(0, 1)
        else:
            plt.xlim(None, None)
            plt.ylim(None, None)
        plt.plotsize(width, height)
        plt._set_size(width, height)  # as PlotextPlot.render does: resizing needs both
        plt.theme(theme)
        return Text.from_ansi(plt.build())

    def _strips(self, app, key: tuple, text: Text) -> list[Strip]:
        width, height, _ = key
        options = app.console.options.update_dimensions(width, height)
        lines = app.console.render_lines(text, options, pad=True)
        return [Strip(Segment.simplify(line)).adjust_cell_length(width) for line in lines[:height]]

    def render_line(self, y: int) -> Strip:
        # Line API: no rendering on the event loop, only the lines the worker thread made.
        if y < len(self._lines):
            return self._lines[y].crop_extend(0, self.size.width, None)
        return Strip.blank(self.size.width)

    def on_mount(self) -> None:
        super().on_mount()
        self._request_build()
