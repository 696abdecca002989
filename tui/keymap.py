"""The person's own keys: `keymap.json` in the state folder maps binding ids to keys.

    {"wizard.next": "ctrl+right", "dashboard.stop": "x"}

Every binding has an id (`wizard.next`, `method.parts`, `dashboard.stop`, ...); Textual's
`App.set_keymap` puts the given keys in place of the defaults. A bad file is one sentence, and the
default keys stay.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.paths import state_dir

KEYMAP_FILE = "keymap.json"


def keymap_path() -> Path:
    return state_dir() / KEYMAP_FILE


def load_keymap(path: Path | None = None) -> tuple[dict[str, str], str]:
    """(binding id -> keys, problem): an empty map and no problem when there is no file."""
    path = path or keymap_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, ""
    except (OSError, UnicodeDecodeError) as error:
        return {}, f"{path}: cannot read the keymap ({error.__class__.__name__}); the default keys stay."
    except json.JSONDecodeError as error:
        return {}, f"{path}: not valid JSON at line {error.lineno}; the default keys stay."
    if not isinstance(data, dict):
        return {}, f'{path}: a keymap is a JSON object of binding id to keys, e.g. {{"wizard.next": "ctrl+right"}}.'
    bad = next((key for key, value in data.items() if not isinstance(value, str) or not value.strip()), None)
    if bad is not None:
        return {}, f'{path}: "{bad}" must map to keys as text, e.g. "ctrl+right"; the default keys stay.'
    return {str(key): value.strip() for key, value in data.items()}, ""
