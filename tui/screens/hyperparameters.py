"""Step 6: every training field, checked as it is typed, with presets to start from."""

from __future__ import annotations

from typing import Any, Optional

from textual.app import ComposeResult
from textual.containers import Grid, Horizontal
from textual.widgets import Input, Label, Select, Static

from engine.session.edits import Preset, load_presets, matching_preset, parse_field
from engine.session.schema import Session
from tui.screens.base import StepScreen, explain
from tui.widgets.field import FormField

CUSTOM = "__custom__"
# (section, field, label): PEFT's and TRL's own names, so the form reads like the session file.
FIELDS = (
    ("lora", "r", "r (rank)"),
    ("lora", "lora_alpha", "lora_alpha"),
    ("lora", "lora_dropout", "lora_dropout"),
    ("training", "learning_rate", "learning_rate"),
    ("training", "num_train_epochs", "num_train_epochs"),
    ("training", "max_steps", "max_steps"),
    ("training", "per_device_train_batch_size", "batch size"),
    ("training", "gradient_accumulation_steps", "grad accumulation"),
    ("training", "warmup_ratio", "warmup_ratio"),
    ("training", "weight_decay", "weight_decay"),
    ("training", "max_grad_norm", "max_grad_norm"),
    ("training", "logging_steps", "logging_steps"),
    ("training", "eval_steps", "eval_steps"),
    ("training", "save_steps", "save_steps"),
    ("training", "seed", "seed"),
)
# What an empty field means, shown in it.
# What an empty field does (engine.training.args): say it, not "none".
PLACEHOLDERS = {"eval_steps": "auto: 5 a run", "save_steps": "auto: at each eval", "max_steps": "-1 = epochs"}
CHOICES = (
    ("training", "lr_scheduler_type", "lr_scheduler_type"),
    ("training", "optim", "optim"),
    ("training", "gradient_checkpointing", "grad checkpointing"),
    ("top", "backend", "backend"),
)


def _choices(section: str, name: str) -> list[Any]:
    """The values a Literal / bool field of the session allows, read from the schema itself."""
    from typing import Literal, get_args, get_origin

    model = Session if section == "top" else Session.model_fields[section].annotation

    def values_of(annotation: Any) -> list[Any]:
        if annotation is bool:
            return [True, False]
        if get_origin(annotation) is Literal:
            return list(get_args(annotation))
        return [v for arg in get_args(annotation) for v in values_of(arg)]

    return values_of(model.model_fields[name].annotation)


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class HyperparametersScreen(StepScreen):
    STEP = "hyperparameters"
    AUTO_FOCUS = "#preset"
    HELP = "Start from a preset, then change any field; a value the trainer would refuse is marked on the field."

    def __init__(self) -> None:
        super().__init__()
        try:
            self.presets: dict[str, Preset] = load_presets()
            self._presets_error = ""
        except Exception as error:
            self.presets, self._presets_error = {}, explain(error)

    def _value(self, section: str, name: str) -> Any:
        session = self.wizard.session
        return getattr(session, name) if section == "top" else getattr(getattr(session, section), name)

    def compose_body(self) -> ComposeResult:
        options = [(p.title, n) for n, p in self.presets.items()] + [("Custom (your own values)", CUSTOM)]
        with Horizontal(classes="row"):
            yield Label("Preset", classes="row-label")
            yield Select(options, value=matching_preset(self.wizard.session, self.presets) or CUSTOM,
                         allow_blank=False, id="preset", compact=True)
        yield Static("", id="preset-description", classes="muted")
        if self._presets_error:
            yield Static(self._presets_error, classes="error")
        with Grid(id="hp-grid"):
            for section, name, label in FIELDS:
                yield FormField(label, _shown(self._value(section, name)), f"{section}-{name}", placeholder=PLACEHOLDERS.get(name, ""))
            for section, name, label in CHOICES:
                with Horizontal(classes="row choice"):
                    yield Label(label, classes="row-label")
                    yield Select([(_shown(v), _shown(v)) for v in _choices(section, name)],
                                 value=_shown(self._value(section, name)), allow_blank=False,
                                 id=f"choice-{section}-{name}", compact=True)
        yield Static("", id="hp-summary", classes="muted")

    def on_mount(self) -> None:
        self._sync_preset()
        self._summarise()

    def on_show_step(self) -> None:
        """Fields another step may have changed (rank, batch) follow the session, except while wrong."""
        for section, name, _ in FIELDS:
            value = self._value(section, name)
            self.query_one(f"#field-{section}-{name}", FormField).set_value(
                _shown(value), same=lambda text, s=section, n=name, v=value: parse_field(s, n, text) == v
            )
        for section, name, _ in CHOICES:
            select = self.query_one(f"#choice-{section}-{name}", Select)
            with select.prevent(Select.Changed):
                select.value = _shown(self._value(section, name))
        self._sync_preset()
        self._summarise()

    # -- edits -----------------------------------------------------------------------------------
    def _apply(self, section: str, name: str, value: Any) -> Optional[str]:
        try:
            self.wizard.edit_session({name if section == "top" else f"{section}.{name}": value})
        except Exception as error:
            return explain(error).removeprefix("session: ")
        return None

    def on_input_changed(self, event: Input.Changed) -> None:
        parsed = self.parsed_field(event)
        if parsed is None:
            return
        field, section, name, value = parsed
        field.show_error(self._apply(section, name, value))
        self._sync_preset()
        self._summarise()

    def on_select_changed(self, event: Select.Changed) -> None:
        select_id = event.select.id or ""
        if select_id == "preset":
            if event.value in self.presets and event.value != matching_preset(self.wizard.session, self.presets):
                self.apply_named_preset(str(event.value))
            return
        if select_id.startswith("choice-"):
            _, section, name = select_id.split("-", 2)
            raw = str(event.value)
            value: Any = {"true": True, "false": False}.get(raw, raw)
            problem = self._apply(section, name, value)
            if problem:
                self.say(problem, error=True)
            self._sync_preset()
            self._summarise()

    def apply_named_preset(self, name: str) -> None:
        try:
            self.wizard.edit_session(self.presets[name].values, where=f"preset {name}")
        except Exception as error:
            self.say(explain(error), error=True)
            return
        for field in self.query(FormField):
            field.show_error(None)
        self.on_show_step()
        self.say(f"Preset {self.presets[name].title} applied.")

    def _sync_preset(self) -> None:
        select = self.query_one("#preset", Select)
        wanted = matching_preset(self.wizard.session, self.presets) or CUSTOM
        description = self.presets[wanted].description if wanted in self.presets else "Your own values: no preset matches them."
        self.query_one("#preset-description", Static).update(description)
        if select.value != wanted:
            with select.prevent(Select.Changed):
                select.value = wanted

    def _summarise(self) -> None:
        session = self.wizard.session
        training = session.training
        length = f"{training.max_steps} steps" if training.max_steps > 0 else f"{training.num_train_epochs:g} epoch(s)"
        self.query_one("#hp-summary", Static).update(
            f"Effective batch {session.effective_batch_size} "
            f"({training.per_device_train_batch_size} × {training.gradient_accumulation_steps}), {length}, "
            f"LoRA scale alpha/r = {session.lora.lora_alpha / session.lora.r:g}."
        )

    def commit(self, strict: bool) -> Optional[str]:
        bad = [f.label for f in self.query(FormField) if f.error]
        if strict and bad:
            return f"Fix {', '.join(bad)} first (the message is on the field)."
        return None
