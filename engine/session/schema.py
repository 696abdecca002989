"""The session file: every choice the wizard makes, replayable headless.

Field names follow PEFT's `LoraConfig` and TRL's `SFTConfig` / `TrainingArguments`, so a person who
knows those libraries reads a session at once. Defaults are the seed recipe's. The schema is
strict: unknown keys and wrong types are refused with the field's path.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from engine.errors import SessionError
from engine.models import is_hub_id
from engine.paths import atomic_write_text

SCHEMA_VERSION = 1
DEMO_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
RECOMMENDED_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

Method = Literal["full", "lora", "qlora"]
Backend = Literal["auto", "unsloth", "peft"]
# Experiment trackers, TRL's names (SFTConfig.report_to).
Tracker = Literal["tensorboard", "wandb", "trackio", "mlflow", "none"]
DatasetFormat = Literal["auto", "instruction", "prompt_completion", "sharegpt", "messages", "text"]
# The GGUF types `lora-tui export --gguf` writes (llama.cpp's names, lower case).
GgufType = Literal["f16", "bf16", "q8_0", "q4_k_m", "q5_k_m"]
ROLES = ("instruction", "input", "response", "prompt", "completion", "conversations", "messages", "text")


class _Section(BaseModel):
    # strict: "16" is not 16; extra="forbid": a misspelt key is an error, not a silent default.
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class ModelSection(_Section):
    name: str = DEMO_MODEL
    max_seq_length: int = Field(512, gt=0, le=1_048_576)
    trust_remote_code: bool = False


class LoraSection(_Section):
    r: int = Field(16, gt=0, le=4096)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    bias: Literal["none", "all", "lora_only"] = "none"
    target_modules: list[str] = Field(default_factory=lambda: list(RECOMMENDED_TARGET_MODULES), min_length=1)
    use_rslora: bool = False


class DatasetSection(_Section):
    path: str
    format: DatasetFormat = "auto"
    # role -> column of the file; None means "this role is not used" (Alpaca without `input`).
    columns: Optional[dict[str, Optional[str]]] = None
    template: Literal["alpaca", "chat"] = "alpaca"
    eval_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    # TRL's name: loss on the responses only (False trains on the whole text).
    completion_only_loss: bool = True
    # Rows whose mapped columns are null or not text are skipped (and counted) instead of refused.
    skip_invalid_rows: bool = False

    @field_validator("columns")
    @classmethod
    def _known_roles(cls, columns):
        for role in columns or {}:
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        return columns


class TrainingSection(_Section):
    per_device_train_batch_size: int = Field(4, gt=0)
    gradient_accumulation_steps: int = Field(4, gt=0)
    learning_rate: float = Field(2e-4, gt=0.0, lt=1.0)
    num_train_epochs: float = Field(1, gt=0)
    max_steps: int = Field(-1, ge=-1)
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.001, ge=0.0)
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
    ] = "linear"
    # "auto": about 100 loss points, 10 evaluations and 4 checkpoints a run, whatever its length
    # (engine.training.args.auto_steps). null in older sessions means "auto" too.
    logging_steps: Union[PositiveInt, Literal["auto"]] = "auto"
    eval_steps: Union[PositiveInt, Literal["auto"], None] = "auto"
    save_steps: Union[PositiveInt, Literal["auto"], None] = "auto"
    save_total_limit: Optional[int] = Field(3, gt=0)
    optim: Literal["adamw_8bit", "adamw_torch", "adamw_torch_fused", "paged_adamw_8bit", "adafactor", "sgd"] = "adamw_8bit"
    # True, False, or "unsloth" (Unsloth's offloaded checkpointing; plain True on the peft backend).
    gradient_checkpointing: Union[bool, Literal["unsloth"]] = "unsloth"
    max_grad_norm: float = Field(1.0, gt=0.0)
    seed: int = 42
    # Experiment trackers: "tensorboard" writes event files into the run folder (RUN_DIR/tensorboard).
    report_to: Union[Tracker, list[Tracker]] = "none"

    @field_validator("report_to")
    @classmethod
    def _none_alone(cls, value):
        if isinstance(value, list) and "none" in value and len(value) > 1:
            raise ValueError('"none" cannot be listed with a tracker; give the trackers, or "none" alone')
        return value

    @property
    def trackers(self) -> list[str]:
        """The trackers as a list, without "none"."""
        chosen = self.report_to if isinstance(self.report_to, list) else [self.report_to]
        return [name for name in chosen if name != "none"]


class OutputSection(_Section):
    dir: str = "runs/run"
    save_merged: bool = False
    # A shell command run once after a successful run, its adapter saved and checked (e.g. a cloud
    # provider's stop command); never after a failed or stopped run. Off (null) by default.
    on_finish: Optional[str] = Field(None, min_length=1)
    # A GGUF type: the run ends with `lora-tui export --gguf TYPE` (a checked GGUF and a Modelfile).
    gguf: Optional[GgufType] = None

    @field_validator("on_finish")
    @classmethod
    def _blank_is_off(cls, command: Optional[str]) -> Optional[str]:
        return command.strip() or None if command is not None else None  # "   " would run an empty shell


Strategy = Literal["auto", "none", "ddp", "fsdp"]


class DistributedSection(_Section):
    """Several processes through torchrun (torch.distributed.run), with torchrun's own names.

    The default is one process. `nproc_per_node` "auto" means every visible GPU (1 on the CPU);
    `strategy` "auto" is DDP for several processes, "none" one process, "fsdp" shards weights,
    gradients and optimizer state over the processes (FSDP2). With `nnodes` above 1 every node runs
    `lora-tui --replay SESSION --node-rank I` and `rdzv_endpoint` is node 0's HOST:PORT.
    `cpu_offload` (FSDP only) keeps each process's shards of weights, gradients and optimizer state
    in RAM between uses (FSDP2's CPUOffloadPolicy, accelerate's fsdp_config.offload_params): the
    GPU holds a layer while it computes, at the price of PCIe traffic every step.
    """

    strategy: Strategy = "auto"
    nproc_per_node: Union[PositiveInt, Literal["auto"]] = 1
    nnodes: PositiveInt = 1
    node_rank: int = Field(0, ge=0)
    rdzv_endpoint: Optional[str] = Field(None, validate_default=True)
    cpu_offload: bool = False

    @field_validator("nproc_per_node", mode="before")
    @classmethod
    def _count_or_auto(cls, value):
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError('must be a whole number of processes (1 or more) or "auto" (every visible GPU)')
        return value

    @field_validator("nproc_per_node", "nnodes")
    @classmethod
    def _one_process_for_none(cls, value, info):
        if info.data.get("strategy") == "none" and isinstance(value, int) and value > 1:
            raise ValueError('must be 1 with strategy "none" (one process); choose strategy "ddp" or "fsdp" for several')
        return value

    @field_validator("node_rank")
    @classmethod
    def _node_rank_below_nnodes(cls, value, info):
        nnodes = info.data.get("nnodes", 1)
        if value >= nnodes:
            raise ValueError(f"must be below nnodes ({nnodes}): nodes are numbered 0 to {nnodes - 1}")
        return value

    @field_validator("rdzv_endpoint")
    @classmethod
    def _endpoint(cls, value, info):
        example = 'node 0\'s address and a free port, such as "10.0.0.1:29500"'
        if value is None:
            if info.data.get("nnodes", 1) > 1:
                raise ValueError(f"is required when nnodes is above 1: give {example}")
            return value
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"must be HOST:PORT, {example}")
        return value


class Session(_Section):
    version: Literal[1] = SCHEMA_VERSION
    model: ModelSection = Field(default_factory=ModelSection)
    method: Method = "lora"
    backend: Backend = "auto"
    lora: LoraSection = Field(default_factory=LoraSection)
    dataset: DatasetSection
    training: TrainingSection = Field(default_factory=TrainingSection)
    output: OutputSection = Field(default_factory=OutputSection)
    # Several processes (torchrun); older sessions have no such section and mean one process.
    distributed: DistributedSection = Field(default_factory=DistributedSection)

    @model_validator(mode="after")
    def _eval_needs_rows(self):
        if isinstance(self.training.eval_steps, int) and self.dataset.eval_fraction == 0:
            raise ValueError("training.eval_steps is set but dataset.eval_fraction is 0; set an eval fraction such as 0.05")
        return self

    # -- conveniences -------------------------------------------------------------------------
    @property
    def load_in_4bit(self) -> bool:
        return self.method == "qlora"

    @property
    def effective_batch_size(self) -> int:
        return self.training.per_device_train_batch_size * self.training.gradient_accumulation_steps

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def with_changes(self, changes: dict[str, Any], where: str = "session") -> Session:
        """The one way to change a session: a validated copy with `changes` laid over it.

        Keys are dotted field paths (`{"lora.r": 8, "method": "qlora"}`) or sections holding
        some of their fields (`{"lora": {"r": 8}}`). The whole session is validated again, cross-field
        rules included; a bad field or value raises one `SessionError` that names it and `where`.
        """
        data = self.to_dict()
        for key, value in _flatten_changes(changes, data):
            node = data
            parts = key.split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise SessionError(f"{where}: {key} is not a field of the session.")
                node = node[part]
            if parts[-1] not in node:
                raise SessionError(f"{where}: {key} is not a field of the session.")
            node[parts[-1]] = value
        return session_from_dict(data, where=where)

    def to_json(self) -> str:
        data = self.to_dict()
        if data.get("distributed") == DistributedSection().model_dump(mode="json"):
            del data["distributed"]  # one process: the file stays as it was before the section existed
        return json.dumps(data, indent=2) + "\n"

    def resolved(self, base_dir: Path) -> Session:
        """A copy whose relative paths are made absolute against `base_dir` (the session's folder)."""
        data = self.to_dict()
        if not is_hub_id(data["dataset"]["path"], base_dir):
            data["dataset"]["path"] = _resolve_path(data["dataset"]["path"], base_dir)
        data["output"]["dir"] = _resolve_path(data["output"]["dir"], base_dir)
        name = data["model"]["name"]
        if _looks_like_local_path(name, base_dir):
            data["model"]["name"] = _resolve_path(name, base_dir)
        return Session.model_validate(data)


def _flatten_changes(changes: dict[str, Any], data: dict[str, Any]):
    """(dotted key, value) pairs; a section given as a dict changes only the fields it names."""
    for key, value in changes.items():
        if "." not in key and isinstance(value, dict) and isinstance(data.get(key), dict):
            for field_name, field_value in value.items():
                yield f"{key}.{field_name}", field_value
        else:
            yield key, value


def _resolve_path(value: str, base_dir: Path) -> str:
    path = Path(value).expanduser()
    if not path.is_absolute() and "://" not in value:
        path = (base_dir / path).resolve()
    return str(path)


def _looks_like_local_path(name: str, base_dir: Path) -> bool:
    """A model name is a path unless it is a hub id (engine.models.is_hub_id)."""
    return not is_hub_id(name, base_dir)


def _field_path(loc: tuple) -> str:
    # pydantic puts a Union member's tag in the location ("constrained-int", "literal['auto']",
    # "list[...]"); the person wrote the field, not the tag.
    tags = {"bool", "int", "float", "str", "none", "list", "dict"}
    parts = [str(part) for part in loc if isinstance(part, int) or (str(part).isidentifier() and part not in tags)]
    return ".".join(parts) or "(top level)"


def _describe(error: dict, where: str) -> str:
    path = _field_path(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        parent_loc, key = error["loc"][:-1], error["loc"][-1]
        model = Session
        for part in parent_loc:
            field = model.model_fields.get(str(part))
            model = getattr(field, "annotation", None) if field else None
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                model = None
                break
        hint = ""
        if model is not None:
            close = difflib.get_close_matches(str(key), list(model.model_fields), n=1)
            if close:
                hint = f" (did you mean {close[0]!r}?)"
        return f"{where}: {path} is not a known field{hint}."
    if kind == "missing":
        return f"{where}: {path} is required."
    value = error.get("input")
    shown = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return f"{where}: {path} {message[0].lower()}{message[1:]} (got {shown})."


def session_from_dict(data: Any, where: str = "session") -> Session:
    """Validate a parsed session; raise one readable `SessionError` for the first problem."""
    if not isinstance(data, dict):
        raise SessionError(f"{where}: expected a JSON object at the top level, got {type(data).__name__}.")
    version = data.get("version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise SessionError(f"{where}: version {version!r} is not supported; this lora-tui reads version {SCHEMA_VERSION}.")
    try:
        return Session.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        raise SessionError(_describe(errors[0], where)) from None


def load_session(path: str | Path, resolve_paths: bool = True) -> Session:
    """Read and validate a session file; relative paths become absolute against its folder."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SessionError(f"{path}: no such session file; give the path of a session JSON file.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SessionError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.") from None
    except UnicodeDecodeError:
        raise SessionError(f"{path}: not a UTF-8 text file; a session is a JSON file.") from None
    session = session_from_dict(data, where=str(path))
    return session.resolved(path.resolve().parent) if resolve_paths else session


def save_session(session: Session, path: str | Path) -> Path:
    """Write the session atomically (a crash never leaves half a file)."""
    path = Path(path).expanduser()
    atomic_write_text(path, session.to_json())
    return path
