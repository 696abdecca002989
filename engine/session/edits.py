"""Editing a session the way the wizard does: one typed field at a time, presets laid over it,
and the paths written into a session file. Every change goes through `Session.with_changes`, so
the form, presets, remedies and a session file never disagree. No Textual here: the TUI calls these."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from engine.errors import UserError
from engine.paths import PRESETS_DIR
from engine.session.draft import absolute_path, new_session
from engine.session.schema import Session, session_from_dict

PRESETS_FILE = "hyperparameters.json"


# -- presets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    description: str
    values: dict[str, dict[str, Any]]  # section -> {field: value}, e.g. {"lora": {"r": 16}}


def load_presets(path: Optional[Path] = None) -> dict[str, Preset]:
    """Hyperparameter presets from `presets/hyperparameters.json`, checked against the schema."""
    path = path or PRESETS_DIR / PRESETS_FILE
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError:
        raise UserError(f"{path}: the presets file is missing; reinstall lora-tui or restore presets/.") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON at line {exc.lineno}: {exc.msg}.") from None
    presets: dict[str, Preset] = {}
    probe = new_session()
    for name, entry in raw.items():
        values = {section: dict(entry.get(section, {})) for section in ("lora", "training") if section in entry}
        preset = Preset(name, entry.get("title", name), entry.get("description", ""), values)
        apply_preset(probe, preset, where=f"{path}: preset {name}")  # refuse a preset that would not validate
        presets[name] = preset
    return presets


def apply_preset(session: Session, preset: Preset, where: str = "preset") -> Session:
    """A copy of `session` with the preset's values laid over it."""
    return session.with_changes(preset.values, where=where)


def matching_preset(session: Session, presets: dict[str, Preset]) -> Optional[str]:
    """The name of the preset the session currently matches exactly, if any."""
    data = session.to_dict()
    for name, preset in presets.items():
        if all(data[s].get(k) == v for s, values in preset.values.items() for k, v in values.items()):
            return name
    return None


# -- one field at a time, as a person types it ------------------------------------------------

_SECTIONS: dict[str, type[BaseModel]] = {}


def _section_model(section: str) -> type[BaseModel]:
    if not _SECTIONS:
        for name, info in Session.model_fields.items():
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
                _SECTIONS[name] = info.annotation
    try:
        return _SECTIONS[section]
    except KeyError:
        raise KeyError(f"no session section {section!r}") from None


def _adapter(section: str, name: str) -> TypeAdapter:
    info = _section_model(section).model_fields[name]
    annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return TypeAdapter(annotation, config=ConfigDict(strict=True))


def _candidates(text: str) -> list[Any]:
    """What a typed string could mean: None, a bool, a number, or the text itself."""
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("", "none", "null"):
        return [None]
    if lowered in ("true", "yes", "on"):
        return [True, stripped]
    if lowered in ("false", "no", "off"):
        return [False, stripped]
    found: list[Any] = []
    try:
        found.append(int(stripped))
    except ValueError:
        pass
    try:
        found.append(float(stripped))
    except ValueError:
        pass
    found.append(stripped)
    return found


def parse_field(section: str, name: str, text: str) -> Any:
    """The typed value for `section.name` from what a person typed, or `ValueError` with one
    sentence that says what would be right (the schema's own rule, so the form and a session file
    never disagree)."""
    adapter = _adapter(section, name)
    first_error: Optional[str] = None
    for candidate in _candidates(text):
        try:
            return adapter.validate_python(candidate)
        except ValidationError as exc:
            if first_error is None:
                first_error = _plain(exc)
    raise ValueError(first_error or f"{section}.{name}: not a valid value")


def _plain(exc: ValidationError) -> str:
    message = exc.errors()[0]["msg"]
    if message.startswith("Input should be"):
        message = "should be" + message[len("Input should be"):]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return message


def dataset_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """The dataset step's changes for `Session.with_changes`, its path made absolute (a draft has
    no folder of its own to be relative to)."""
    changes = dict(changes)
    if changes.get("path") is not None:
        changes["path"] = absolute_path(str(changes["path"]))
    return {"dataset": changes}


def session_for_file(session: Session, session_file: str | Path) -> Session:
    """The session as written to `session_file`: paths inside that file's folder become relative to
    it (the folder can move, and it reads better); others stay absolute."""
    folder = Path(session_file).expanduser().resolve().parent
    data = session.to_dict()

    def relative(value: str) -> str:
        if not value or "://" in value:
            return value
        path = Path(value).expanduser()
        if not path.is_absolute():
            return value
        try:
            return str(path.resolve().relative_to(folder))
        except ValueError:
            return value

    data["dataset"]["path"] = relative(data["dataset"]["path"])
    data["output"]["dir"] = relative(data["output"]["dir"])
    if Path(data["model"]["name"]).expanduser().is_absolute():
        data["model"]["name"] = relative(data["model"]["name"])
        if "/" not in data["model"]["name"]:
            data["model"]["name"] = "./" + data["model"]["name"]  # still read as a path, not a hub id
    return session_from_dict(data, where=str(session_file))


def shown_path(path: str) -> str:
    """A path as a person would type it here: relative to the working folder when inside it."""
    if not path:
        return path
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return path


def replay_command(session_file: str | Path) -> str:
    return f"lora-tui --replay {session_file}"


def run_name_for(session: Session) -> str:
    """A readable default run folder name: model and dataset."""
    model = Path(session.model.name.rstrip("/")).name.replace(".gguf", "")
    data = Path(session.dataset.path).stem if session.dataset.path else "data"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{model}-{data}").lower()
