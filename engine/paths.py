"""Where lora-tui keeps things on disk: its own data (presets, demo data), caches, the last session, run folders."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def _data_root() -> Path:
    """The folder that holds `presets/` and `data/demo/`.

    Installed from a wheel (pip, pipx) they are package data, `engine/_resources/presets/` and
    `engine/_resources/data/demo/` (setup.py maps the repository's folders there), found through
    importlib.resources. From a checkout, plain or editable, they are the repository's own folders.
    """
    packaged = resources.files("engine") / "_resources"
    if isinstance(packaged, Path) and packaged.is_dir():  # a wheel is unpacked on disk, never imported from a zip
        return packaged.resolve()
    return Path(__file__).resolve().parent.parent


# The repository from a checkout; in an installed wheel, `engine/_resources/` (the same layout).
# Child processes (`python -m engine.training.worker`, ...) get it on PYTHONPATH: from a checkout
# that makes `engine` importable; installed, `engine` already is (same interpreter), and this folder
# holds data only, so it shadows nothing. It is never site-packages or a folder above it.
PROJECT_ROOT = _data_root()
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
