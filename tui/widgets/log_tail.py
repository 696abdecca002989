"""The last lines of the worker's log, read incrementally."""

from __future__ import annotations

import re
from pathlib import Path

from textual.widgets import Log

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# On first open only the end of a long log is worth reading.
FIRST_READ_BYTES = 64 * 1024


def clean_lines(text: str) -> list[str]:
    """Progress bars redraw with carriage returns: keep what the line finally said."""
    lines = []
    for line in text.split("\n"):
        line = ANSI.sub("", line.rstrip("\r").split("\r")[-1]).rstrip()
        if line:
            lines.append(line)
    return lines


class LogTail(Log):
    DEFAULT_CSS = """
    LogTail { height: 8; border: round $primary 30%; }
    """

    def __init__(self, path: Path | None = None, **kwargs):
        super().__init__(max_lines=200, auto_scroll=True, **kwargs)
        self.path = path
        self._offset = 0
        self._partial = ""

    def on_mount(self) -> None:
        self.border_title = "Worker log"

    def poll(self) -> None:
        if self.path is None:
            return
        try:
            size = self.path.stat().st_size
            if size == self._offset:
                return  # nothing new: no open, no read
            if size < self._offset:  # a new log replaced the old one
                self._offset, self._partial = 0, ""
            if self._offset == 0 and size > FIRST_READ_BYTES:
                self._offset = size - FIRST_READ_BYTES
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except OSError:
            return
        if not chunk:
            return
        self._offset += len(chunk)
        text = self._partial + chunk.decode("utf-8", errors="replace")
        text, _, self._partial = text.rpartition("\n")
        lines = clean_lines(text)
        if lines:
            self.write_lines(lines)
