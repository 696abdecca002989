"""Where lora-tui keeps things on disk: caches, the last session, run folders."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PRESETS_DIR = PROJECT_ROOT / "presets"
DEMO_DATA_DIR = PROJECT_ROOT / "data" / "demo"


def cache_dir() -> Path:
    """`$LORA_TUI_CACHE`, else `$XDG_CACHE_HOME/lora-tui`, else `~/.cache/lora-tui`."""
    explicit = os.environ.get("LORA_TUI_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lora-tui"


def state_dir() -> Path:
    """Where the wizard keeps the session in progress and the list of known runs."""
    explicit = os.environ.get("LORA_TUI_STATE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base).expanduser() / "lora-tui"


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
