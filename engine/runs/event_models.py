"""Each event kind of `events.jsonl` as a pydantic model: checked when written and when read.

The stream stays plain JSON lines (one object with an "event" key each), so any reader, a person
with `jq` included, can follow it. The models say what each kind carries; extra fields are allowed
(a newer worker may add some), and a kind this version does not know is kept as it is rather than
refused, so an older lora-tui can still watch a newer run. DESIGN.md fixes the names.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow")

    time: Optional[float] = Field(None, description="seconds since the epoch, when it was written")


# NaN and infinity losses are written as the strings "nan" / "inf" so they stay visible in JSON.
Number = Union[float, str, None]


class StartEvent(_Event):
    event: Literal["start"]
    step: int = Field(0, description="the step training starts from (above 0 when resumed)")
    total_steps: Optional[int] = None
    world_size: int = Field(1, ge=1, description="processes in the job; one start per launch, from global rank 0")
    num_train_epochs: Optional[float] = None
    resume_from: Optional[str] = None
    pid: Optional[int] = None
    host: Optional[str] = Field(None, description="the machine that runs it (attach offers controls only there)")
    run_dir: Optional[str] = None


class StepEvent(_Event):
    """A light heartbeat after an optimizer step, at most twice a second: progress moves every step."""

    event: Literal["step"]
    step: int
    total_steps: Optional[int] = None
    elapsed: float = Field(description="seconds since training started, pauses excluded")
    samples: int = Field(0, description="training rows seen since this launch started")
    tokens: int = Field(0, description="training tokens seen since this launch started")
    tokens_per_second: Optional[float] = None
    eta_seconds: Optional[float] = None


class LogEvent(_Event):
    event: Literal["log"]
    step: int
    loss: Number = None
    learning_rate: Number = None
    grad_norm: Number = None
    epoch: Optional[float] = None
    tokens_per_second: Optional[float] = None
    samples_per_second: Optional[float] = None
    tokens_seen: Optional[int] = None
    elapsed: Optional[float] = None
    eta_seconds: Optional[float] = None
    total_steps: Optional[int] = None
    memory_gb: Optional[float] = None
    memory_gb_ranks: Optional[list[float]] = Field(None, description="each process's peak GiB, when several train")


class EvalEvent(_Event):
    event: Literal["eval"]
    step: int
    eval_loss: Number = None
    epoch: Optional[float] = None


class CheckpointEvent(_Event):
    event: Literal["checkpoint"]
    step: int
    path: Optional[str] = None


class Remedy(BaseModel):
    """One fix for a finding: dotted session changes (None: advice only) and how the run goes on."""

    model_config = ConfigDict(extra="allow")

    id: str
    label: str
    changes: dict[str, Any] = Field(default_factory=dict)
    restart: Optional[Literal["resume", "fresh"]] = None


class FindingEvent(_Event):
    event: Literal["finding"]
    kind: str = Field(description='"no_decrease", "overfitting", "oom", "nan", "divergence", ...')
    message: str
    step: Optional[int] = None
    remedies: list[Remedy] = Field(default_factory=list)
    evidence: dict[str, Any] = Field(default_factory=dict)


class StatusEvent(_Event):
    event: Literal["status"]
    state: str = Field(description='"loading_model", "preparing_data", "paused", "running", "merging", ...')
    step: Optional[int] = None


class EndEvent(_Event):
    event: Literal["end"]
    status: Literal["completed", "stopped"]
    step: Optional[int] = None


class ErrorEvent(_Event):
    event: Literal["error"]
    message: str = Field(description="one line for the person; the traceback is in worker.log")
    kind: Optional[str] = None
    step: Optional[int] = None


class NoteEvent(_Event):
    """What the supervisor did on its own: a retry after out of memory, a fallback to peft."""

    event: Literal["retry", "fallback"]
    message: str


class FactsEvent(_Event):
    """What was loaded: the model's and the data's facts, for the dashboard and the diagnostics; what
    an evaluation found; a GGUF export and its check (engine.export.gguf)."""

    event: Literal["model", "data", "evaluation", "gguf"]


KNOWN = {
    "start": StartEvent, "step": StepEvent, "log": LogEvent, "eval": EvalEvent, "checkpoint": CheckpointEvent,
    "finding": FindingEvent, "status": StatusEvent, "end": EndEvent, "error": ErrorEvent,
    "retry": NoteEvent, "fallback": NoteEvent, "model": FactsEvent, "data": FactsEvent, "evaluation": FactsEvent,
    "gguf": FactsEvent,
}


def check_event(record: dict[str, Any]) -> dict[str, Any]:
    """`record` validated against its kind's model (coerced where JSON allows); a kind this
    version does not know passes unchanged. Raises ValueError naming the field for a bad one."""
    model = KNOWN.get(record.get("event"))  # type: ignore[arg-type]
    if model is None:
        return record
    try:
        checked = model.model_validate(record)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"a {record.get('event')!r} event with a bad {where}: {first['msg']}") from None
    return checked.model_dump(mode="json", exclude_unset=True)
