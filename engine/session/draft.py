"""The wizard's memory: the session in progress, saved after every step.

The session in progress is a real, valid session file (`state_dir()/last_session.json`) with
absolute paths, so a person whose SSH drops finds it again, and can even `--replay` it once it is
complete. Where the wizard stood (the step, the GPU being planned for) lives beside it in
`wizard.json`, because those are not part of a session. No Textual here: the TUI calls these.

This module is on the wizard's start-up path, so it does not import the schema (pydantic and the
session models cost ~150 ms, a third of a bare Textual app's start): a draft may hold the session
as plain data, validated on first use, after the first screen is drawn. Editing a session field by
field lives in `engine.session.edits`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from engine.errors import SessionError
from engine.paths import atomic_write_text, state_dir

if TYPE_CHECKING:
    from engine.session.schema import Session

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
# The schema's default model (engine.session.schema.DEMO_MODEL), named here so that this module,
# on the start-up path, need not import the schema.
DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
LAST_SESSION_FILE = "last_session.json"
POSITION_FILE = "wizard.json"


def last_session_path() -> Path:
    return state_dir() / LAST_SESSION_FILE


def position_path() -> Path:
    return state_dir() / POSITION_FILE


class WizardDraft:
    """Everything needed to put the wizard back where the person left it.

    `session` may be given as plain data (a parsed session file, or `fresh_session_data()`); it is
    validated the first time it is read, and a problem raises `SessionError` then."""

    def __init__(
        self,
        session: Union[Session, dict[str, Any]],
        step: str = "hardware",
        plan_gpu: Optional[str] = None,  # a catalogue GPU name to plan for instead of the one found
        plan_vram_gb: Optional[float] = None,
        saved_at: Optional[float] = None,
        extra: Optional[dict[str, Any]] = None,
        where: str = "session in progress",
    ):
        self.session = session  # type: ignore[assignment]  # the setter takes data too
        self.step = step
        self.plan_gpu = plan_gpu
        self.plan_vram_gb = plan_vram_gb
        self.saved_at = saved_at
        self.extra = dict(extra or {})
        self.where = where

    @property
    def session(self) -> Session:
        if self._session is None:
            from engine.session.schema import session_from_dict

            self._session = session_from_dict(self._data, where=self.where)
            self._data = None
        return self._session

    @session.setter
    def session(self, value: Union[Session, dict[str, Any]]) -> None:
        self._session, self._data = (None, value) if isinstance(value, dict) else (value, None)

    @property
    def validated(self) -> bool:
        return self._session is not None

    def describe(self) -> str:
        """One line a person recognises their work by."""
        parts = [self.session.model.name]
        if self.session.dataset.path:
            parts.append(Path(self.session.dataset.path).name)
        parts.append(f"at {STEP_TITLES.get(self.step, self.step)}")
        if self.saved_at:
            parts.append(time.strftime("saved %Y-%m-%d %H:%M", time.localtime(self.saved_at)))
        return ", ".join(parts)


def fresh_session_data(model: Optional[str] = None, dataset: Optional[str] = None) -> dict[str, Any]:
    """A fresh session as data (the schema fills the seed's defaults); `dataset` may be empty until
    the dataset step. The prompt layout follows the model: an instruct model's own chat template
    (it taught the demo task faster than the Alpaca layout), the Alpaca layout for a base model
    (engine.planner.schedule.recommended_template)."""
    from engine.planner.schedule import recommended_template

    data: dict[str, Any] = {"dataset": {"path": absolute_path(dataset) if dataset else ""}}
    if model:
        data["model"] = {"name": model.strip()}
    data["dataset"]["template"] = recommended_template(model.strip() if model else DEFAULT_MODEL)
    return data


def new_session(model: Optional[str] = None, dataset: Optional[str] = None) -> Session:
    """A fresh, validated session with the seed's defaults."""
    from engine.session.schema import session_from_dict

    return session_from_dict(fresh_session_data(model, dataset), where="new session")


def absolute_path(path: str) -> str:
    text = path.strip()
    return str(Path(text).expanduser().resolve()) if text else ""


def save_draft(draft: WizardDraft) -> Path:
    """Write the session in progress and the wizard's position (atomically, each)."""
    from engine.session.schema import save_session

    draft.saved_at = time.time()
    # Relative paths mean "from where the wizard runs"; the draft lives elsewhere, so it keeps them
    # absolute (a relative path in a session file would be read against the state folder).
    session = draft.session.resolved(Path.cwd())
    if not draft.session.dataset.path:  # no dataset chosen yet stays "none", not the working folder
        session = session.with_changes({"dataset.path": ""}, where="the session in progress")
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


def load_draft(validate: bool = True) -> Optional[WizardDraft]:
    """The last session in progress, or None when there is none or it no longer validates.

    Without `validate` the session is only parsed as JSON (no schema import): reading
    `draft.session` validates it later and may raise `SessionError`."""
    path = last_session_path()
    if not path.is_file():
        return None
    try:
        session: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # a damaged file: start fresh rather than fail at start-up
    if not isinstance(session, dict):
        return None
    if validate:
        from engine.session.schema import session_from_dict

        try:
            # saved with absolute paths, so none are resolved; "" stays "no dataset yet"
            session = session_from_dict(session, where=str(path))
        except SessionError:
            return None  # an older schema: start fresh rather than fail at start-up
    position: dict[str, Any] = {}
    try:
        position = json.loads(position_path().read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        pass
    if not isinstance(position, dict):
        position = {}
    step = position.get("step") if position.get("step") in STEPS else "hardware"
    vram = position.get("plan_vram_gb")
    return WizardDraft(
        session=session,
        step=step,
        plan_gpu=position.get("plan_gpu") if isinstance(position.get("plan_gpu"), str) else None,
        plan_vram_gb=float(vram) if isinstance(vram, (int, float)) and vram > 0 else None,
        saved_at=position.get("saved_at") or path.stat().st_mtime,
        extra=position.get("extra") or {},
        where=str(path),
    )


def forget_draft() -> None:
    for path in (last_session_path(), position_path()):
        path.unlink(missing_ok=True)
