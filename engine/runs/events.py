"""The event stream: one JSON object a line in `events.jsonl`, written by the worker.

The TUI dashboard, the headless replay, `lora-tui runs` and the diagnostics all read the same
stream, so a run folder can be watched again later. Each kind is a model in `event_models`:
checked when written (a bad event is our bug, caught by the tests) and when read (a bad line is
skipped, an unknown kind kept). Event names are a contract (see DESIGN.md).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.runs.event_models import check_event

EVENTS_FILE = "events.jsonl"


class EventWriter:
    """Appends events; each line is flushed so readers see it at once."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / EVENTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        line = json.dumps(record, default=_jsonable)
        check_event(json.loads(line))  # as a reader will see it
        self._handle.write(line + "\n")
        self._handle.flush()
        return record

    def close(self) -> None:
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except (OSError, ValueError):
            pass
        self._handle.close()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return str(value)


def read_events(run_dir: str | Path) -> list[dict[str, Any]]:
    """All complete events of a run folder (a half-written last line is ignored)."""
    return list(EventTail(Path(run_dir) / EVENTS_FILE).read_new())


class EventTail:
    """Incremental reader: each `read_new()` returns the events appended since the last call."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    @property
    def offset(self) -> int:
        """Bytes read so far: a file now shorter than this was replaced."""
        return self._offset

    def read_new(self) -> Iterator[dict[str, Any]]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return iter(())
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # "" when the chunk ended with a newline
        events = []
        for line in lines:
            if not line.strip():
                continue
            try:
                events.append(check_event(json.loads(line)))
            except (ValueError, AttributeError):  # JSONDecodeError is a ValueError; a line that is no object
                continue  # a corrupt line is skipped rather than stopping the reader
        return iter(events)
