"""The wizard's memory: the session in progress, saved after every step, and the presets.

The session in progress is a real, valid session file (`state_dir()/last_session.json`) with
absolute paths, so a person whose SSH drops finds it again, and can even `--replay` it once it is
complete. Where the wizard stood (the step, the GPU being planned for) lives beside it in
`wizard.json`, because those are not part of a session. No Textual here: the TUI calls these.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from engine.errors import SessionError, UserError
from engine.paths import PRESETS_DIR, atomic_write_text, state_dir
from engine.session import DatasetSection, Session, load_session, save_session, session_from_dict

# The wizard's steps, in order. Names are stable: they are screen names, palette entries and the
# `step` saved in wizard.json.
STEPS = ("hardware", "model", "method", "target_modules", "dataset", "hyperparameters", "review")
STEP_TITLES = {
    "hardware": "Hardware",
    "model": "Model",
    "method": "Method",
    "target_modules": "Target modules",
    "dataset": "Dataset",
    "hyperparameters": "Hyperparameters",
    "review": "Review",
}
LAST_SESSION_FILE = "last_session.json"
POSITION_FILE = "wizard.json"
PRESETS_FILE = "hyperparameters.json"


def last_session_path() -> Path:
    return state_dir() / LAST_SESSION_FILE


def position_path() -> Path:
    return state_dir() / POSITION_FILE


@dataclass
class WizardDraft:
    """Everything needed to put the wizard back where the person left it."""

    session: Session
    step: str = "hardware"
    plan_gpu: Optional[str] = None  # a catalogue GPU name to plan for instead of the one found
    plan_vram_gb: Optional[float] = None
    saved_at: Optional[float] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line a person recognises their work by."""
        parts = [self.session.model.name]
        if self.session.dataset.path:
            parts.append(Path(self.session.dataset.path).name)
        parts.append(f"at {STEP_TITLES.get(self.step, self.step)}")
        if self.saved_at:
            parts.append(time.strftime("saved %Y-%m-%d %H:%M", time.localtime(self.saved_at)))
        return ", ".join(parts)


def new_session(model: Optional[str] = None, dataset: Optional[str] = None) -> Session:
    """A fresh session with the seed's defaults; `dataset` may be empty until the dataset step."""
    data: dict[str, Any] = {"dataset": {"path": _absolute(dataset) if dataset else ""}}
    if model:
        data["model"] = {"name": model.strip()}
    return session_from_dict(data, where="new session")


def _absolute(path: str) -> str:
    text = path.strip()
    return str(Path(text).expanduser().resolve()) if text else ""


def save_draft(draft: WizardDraft) -> Path:
    """Write the session in progress and the wizard's position (atomically, each)."""
    draft.saved_at = time.time()
    # Relative paths mean "from where the wizard runs"; the draft lives elsewhere, so it keeps them
    # absolute (a relative path in a session file would be read against the state folder).
    session = draft.session.resolved(Path.cwd())
    if not draft.session.dataset.path:  # no dataset chosen yet stays "none", not the working folder
        session = session.model_copy(update={"dataset": session.dataset.model_copy(update={"path": ""})})
    path = save_session(session, last_session_path())
    position = {
        "step": draft.step,
        "plan_gpu": draft.plan_gpu,
        "plan_vram_gb": draft.plan_vram_gb,
        "saved_at": draft.saved_at,
        **({"extra": draft.extra} if draft.extra else {}),
    }
    atomic_write_text(position_path(), json.dumps(position, indent=2) + "\n")
    return path


def load_draft() -> Optional[WizardDraft]:
    """The last session in progress, or None when there is none or it no longer validates."""
    path = last_session_path()
    if not path.is_file():
        return None
    try:
        session = load_session(path, resolve_paths=False)  # saved absolute; "" stays "no dataset yet"
    except SessionError:
        return None  # an older schema or a damaged file: start fresh rather than fail at start-up
    position: dict[str, Any] = {}
    try:
        position = json.loads(position_path().read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        pass
    step = position.get("step") if position.get("step") in STEPS else "hardware"
    vram = position.get("plan_vram_gb")
    return WizardDraft(
        session=session,
        step=step,
        plan_gpu=position.get("plan_gpu") if isinstance(position.get("plan_gpu"), str) else None,
        plan_vram_gb=float(vram) if isinstance(vram, (int, float)) and vram > 0 else None,
        saved_at=position.get("saved_at") or path.stat().st_mtime,
        extra=position.get("extra") or {},
    )


def forget_draft() -> None:
    for path in (last_session_path(), position_path()):
        path.unlink(missing_ok=True)


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
    data = session.to_dict()
    for section, values in preset.values.items():
        data[section].update(values)
    return session_from_dict(data, where=where)


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


def set_field(session: Session, section: str, name: str, value: Any) -> Session:
    """A copy of `session` with one field changed, validated as a whole (cross-field rules too)."""
    data = session.to_dict()
    data[section][name] = value
    return session_from_dict(data, where="session")


def with_dataset(session: Session, **changes: Any) -> Session:
    """A copy with dataset fields changed; the path is made absolute (a draft has no folder)."""
    data = session.to_dict()
    if "path" in changes and changes["path"] is not None:
        changes["path"] = _absolute(str(changes["path"]))
    data["dataset"].update(changes)
    DatasetSection.model_validate(data["dataset"])
    return session_from_dict(data, where="session")


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
