"""Step 6: every training field, checked as it is typed, with presets to start from.

The training length and learning rate are recommended from the data (engine.planner.schedule): the
dataset's rows and tokens are counted in a worker, the rule picks gradient accumulation, epochs and
learning rate for this model and method, and the wizard applies it once per dataset and model
(never over the person's own edits; ctrl+r or the "Recommended" preset applies it again). The
summary shows the optimizer steps and about how long they take, for the values in the form.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal
from textual.widgets import Input, Label, Select, Static

from engine.session.edits import Preset, load_presets, matching_preset, parse_field
from engine.session.schema import Session
from tui.screens.base import StepScreen, explain
from tui.widgets.field import FormField

CUSTOM = "__custom__"
RECOMMENDED = "__recommended__"
SESSION_FILE = "session-file"  # draft.extra marker (see the method step): a session file's choices stand
# The fields the recommended schedule sets.
SCHEDULED = ("training.learning_rate", "training.num_train_epochs", "training.gradient_accumulation_steps", "training.max_steps")
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
PLACEHOLDERS = {"logging_steps": "auto: ~100 a run", "eval_steps": "auto: 10 a run", "save_steps": "auto: ~4 a run",
                "max_steps": "-1 = epochs"}
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


def summary_text(session: Session, facts: Optional[dict]) -> str:
    """What the values in the form add up to: optimizer steps, tokens, and about how long."""
    from engine.planner.schedule import estimate_seconds, steps_per_epoch
    from engine.planner.throughput import about

    t = session.training
    batch = f"effective batch {session.effective_batch_size} ({t.per_device_train_batch_size} × {t.gradient_accumulation_steps})"
    scale = f"LoRA scale alpha/r = {session.lora.lora_alpha / session.lora.r:g}."
    if facts is None:
        length = f"{t.max_steps} steps" if t.max_steps > 0 else f"{t.num_train_epochs:g} epoch(s)"
        return f"Training: {length} at {batch}. {scale}"
    rows = facts["rows"]
    if t.max_steps > 0:
        steps = t.max_steps
        trained_rows = min(steps * session.effective_batch_size, 10**12)
        length = f"max_steps {steps} (about {trained_rows / max(rows, 1):.1f} epochs of {rows:,} rows)"
    else:
        steps = math.ceil(steps_per_epoch(rows, t.per_device_train_batch_size, t.gradient_accumulation_steps) * t.num_train_epochs)
        trained_rows = rows * t.num_train_epochs
        length = f"{rows:,} rows × {t.num_train_epochs:g} epoch{'' if t.num_train_epochs == 1 else 's'}"
    tokens = int(trained_rows * facts["mean_tokens"])
    checkpointing = bool(t.gradient_checkpointing)
    seconds = estimate_seconds(facts["info"], session.method, tokens, tokens_per_row=facts["mean_tokens"],
                               batch_size=t.per_device_train_batch_size,
                               gradient_checkpointing=checkpointing, backend=session.backend,
                               gpu_name=facts.get("gpu"), num_gpus=facts.get("world_size") or 1,
                               cpu_cores=facts.get("cpu_cores") or 1)
    gpus = facts.get("world_size") or 1
    device = (f"{gpus} × {facts['gpu']}" if gpus > 1 else facts["gpu"]) if facts.get("gpu") else f"{facts.get('cpu_cores') or 1} CPU cores"
    return (f"Training: [b]{steps:,} optimizer steps[/b]: {length} at {batch}, about {_tokens(tokens)} tokens, "
            f"[b]{about(seconds)}[/b] on {device}. {scale} {_step_cadence(t, steps, session)}")


def _step_cadence(training, steps: int, session: Session) -> str:
    """What "auto" works out to for this length (engine.training.args.resolved_steps)."""
    from engine.training.args import resolved_steps

    has_eval = session.dataset.eval_fraction > 0
    every = resolved_steps(training, steps, has_eval)
    evaluation = f", evaluated every {every['eval_steps']}" if has_eval else ""
    return f"Loss logged every {every['logging_steps']} step(s){evaluation}, a checkpoint every {every['save_steps']}."


def schedule_text(session: Session, facts: dict, plan) -> str:
    """The recommendation and why, with the layout advice."""
    from engine.planner.schedule import recommended_template

    lines = [f"Recommended for {facts['rows']:,} rows of about {facts['mean_tokens']:.0f} tokens (ctrl+r): "
             + "; ".join(plan.reasons) + "."]
    wanted = recommended_template(session.model.name)
    if session.dataset.template != wanted and session.dataset.format in ("auto", "instruction", "prompt_completion"):
        lines.append("Layout: the model's own chat template teaches an instruct model faster (measured on the demo); "
                     "choose it in the Dataset step." if wanted == "chat" else
                     "Layout: this looks like a base model; the Alpaca layout avoids chat tokens it was never trained on.")
    return "\n".join(lines)


def _tokens(count: int) -> str:
    return f"{count / 1e6:.1f}M" if count >= 1e6 else f"{count / 1e3:.0f}k" if count >= 1e3 else str(count)


class HyperparametersScreen(StepScreen):
    STEP = "hyperparameters"
    AUTO_FOCUS = "#preset"
    HELP = ("The training length and learning rate are recommended from your data; start from it or a preset, then "
            "change any field; a value the trainer would refuse is marked on the field.")
    BINDINGS = [Binding("ctrl+r", "apply_schedule", "Recommended", id="hyperparameters.recommend")]

    def __init__(self) -> None:
        super().__init__()
        self._facts: Optional[dict] = None  # the data's rows and tokens, the model's size, the device
        self._facts_error = ""
        self._pending_key: Optional[list] = None
        self._plan = None  # engine.planner.schedule.Schedule for the current facts
        self._typed = False
        extra = self.wizard.draft.extra
        if extra.get("recommended_for") == SESSION_FILE and "scheduled_for" not in extra:
            extra["scheduled_for"] = SESSION_FILE
        try:
            self.presets: dict[str, Preset] = load_presets()
            self._presets_error = ""
        except Exception as error:
            self.presets, self._presets_error = {}, explain(error)

    def _value(self, section: str, name: str) -> Any:
        session = self.wizard.session
        return getattr(session, name) if section == "top" else getattr(getattr(session, section), name)

    def compose_body(self) -> ComposeResult:
        options = ([("Recommended for this data", RECOMMENDED)] + [(p.title, n) for n, p in self.presets.items()]
                   + [("Custom (your own values)", CUSTOM)])
        with Horizontal(classes="row"):
            yield Label("Preset", classes="row-label")
            yield Select(options, value=self._wanted_preset(), allow_blank=False, id="preset", compact=True)
        yield Static("", id="preset-description", classes="muted")
        yield Static("", id="hp-summary")
        yield Static("", id="schedule", classes="muted")
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

    def on_mount(self) -> None:
        self._sync_preset()
        self._summarise()
        self._plan_schedule()

    def on_show_step(self) -> None:
        self._refresh_fields()
        self._sync_preset()
        self._summarise()
        self._plan_schedule()

    def _refresh_fields(self) -> None:
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

    # -- the recommended schedule: count the data in a worker, then the rule ----------------------
    def _facts_key(self) -> list:
        session = self.wizard.session
        return [session.model.name, session.model.max_seq_length, session.dataset.model_dump_json(), session.method,
                session.training.per_device_train_batch_size, session.training.seed]

    def _plan_schedule(self) -> None:
        session = self.wizard.session
        if not session.dataset.path:
            self._facts, self._plan = None, None
            self.query_one("#schedule", Static).update("Choose a dataset first: the training length follows from its size.")
            return
        key = self._facts_key()
        if self._facts is not None and self._facts["key"] == key:
            self._apply_schedule_once()
            return
        if key == self._pending_key:
            return  # already counting
        self._pending_key = key
        self.query_one("#schedule", Static).update("Counting the dataset's rows and tokens for the training length …")
        self.count(key, session.dataset, session.model.name, session.model.max_seq_length, session.training.seed)

    @work(thread=True, exclusive=True, group="count", exit_on_error=False)
    def count(self, key: list, section, model_name: str, max_seq_length: int, seed: int) -> dict:
        with self.wizard.heavy_lock:
            from engine.data import prepare_dataset
            from engine.models import load_tokenizer

            prepared = prepare_dataset(section, load_tokenizer(model_name), max_seq_length, seed=seed)
        import pyarrow.compute as pc

        lengths = pc.list_value_length(prepared.train.with_format("arrow")["input_ids"])
        rows = prepared.report.train_rows
        info = self.wizard.model_info(model_name)
        hardware, budget = self.wizard.hardware(), self.wizard.budget()
        return {"key": key, "rows": rows, "mean_tokens": pc.sum(lengths).as_py() / max(rows, 1),
                "info": info, "gpu": budget.label if budget.kind == "VRAM" else None, "world_size": budget.world_size,
                "cpu_cores": hardware.cpu_cores}

    def count_done(self, facts: dict) -> None:
        if facts["key"] != self._pending_key:
            return  # a newer count is on its way
        self._pending_key = None
        self._facts, self._facts_error, self._plan = facts, "", None
        self._apply_schedule_once()

    def count_failed(self, error: BaseException) -> None:
        self._pending_key, self._facts, self._plan = None, None, None
        self._facts_error = explain(error)
        self._summarise()

    def _schedule(self):
        if self._facts is None:
            return None
        if self._plan is None:
            from engine.planner.schedule import plan_schedule

            session, facts = self.wizard.session, self._facts
            self._plan = plan_schedule(facts["rows"], facts["mean_tokens"], session.method, facts["info"].params,
                                       session.training.per_device_train_batch_size,
                                       session.training.gradient_accumulation_steps)
        return self._plan

    def _apply_schedule_once(self) -> None:
        """The recommendation goes in once per dataset file, model, method and batch; the person's edits
        after it stand (a new template or eval fraction updates the figures, not their values)."""
        extra = self.wizard.draft.extra
        session = self.wizard.session
        key = [session.model.name, session.dataset.path, session.method, session.training.per_device_train_batch_size]
        if self._facts is not None and extra.get("scheduled_for") != key:
            keep = extra.get("scheduled_for") == SESSION_FILE or self._typed
            extra["scheduled_for"] = key
            if not keep:
                self.action_apply_schedule(quiet=True)
                return
        self._sync_preset()
        self._summarise()

    def action_apply_schedule(self, quiet: bool = False) -> None:
        plan = self._schedule()
        if plan is None:
            self.say(self._facts_error or "The dataset is still being counted; the recommendation follows in a moment.",
                     error=bool(self._facts_error))
            return
        try:
            self.wizard.edit_session(plan.changes(), where="recommended schedule")
        except Exception as error:
            self.say(explain(error), error=True)
            return
        for field in self.query(FormField):
            field.show_error(None)
        self._refresh_fields()
        self._sync_preset()
        self._summarise()
        if not quiet:
            self.say(f"Recommended schedule applied: {plan.steps} steps at learning rate {plan.learning_rate:g}.")

    def _matches_schedule(self) -> bool:
        plan, t = self._plan, self.wizard.session.training
        return plan is not None and t.max_steps <= 0 and t.learning_rate == plan.learning_rate \
            and float(t.num_train_epochs) == plan.num_train_epochs \
            and t.gradient_accumulation_steps == plan.gradient_accumulation_steps

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
        if f"{section}.{name}" in SCHEDULED and value != self._value(section, name):
            self._typed = True  # typed before the recommendation arrived: theirs stands
        field.show_error(self._apply(section, name, value))
        self._sync_preset()
        self._summarise()

    def on_select_changed(self, event: Select.Changed) -> None:
        select_id = event.select.id or ""
        if select_id == "preset":
            if event.value == RECOMMENDED and not self._matches_schedule():
                self.action_apply_schedule()
            elif event.value in self.presets and event.value != matching_preset(self.wizard.session, self.presets):
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

    def _wanted_preset(self) -> str:
        if self._matches_schedule():
            return RECOMMENDED
        return matching_preset(self.wizard.session, self.presets) or CUSTOM

    def _sync_preset(self) -> None:
        select = self.query_one("#preset", Select)
        wanted = self._wanted_preset()
        if wanted == RECOMMENDED:
            description = ""
        elif wanted in self.presets:
            description = self.presets[wanted].description
        elif self._plan is None and self._pending_key is not None:
            description = "The recommendation for this data follows once the dataset is counted."
        else:
            description = "Your own values: no preset matches them."
        self.query_one("#preset-description", Static).update(description)
        self.query_one("#preset-description", Static).display = bool(description)
        if select.value != wanted:
            with select.prevent(Select.Changed):
                select.value = wanted

    def _summarise(self) -> None:
        session = self.wizard.session
        self.query_one("#hp-summary", Static).update(summary_text(session, self._facts))
        if self._facts is not None:
            self.query_one("#schedule", Static).update(schedule_text(session, self._facts, self._schedule()))
        elif self._facts_error:
            self.query_one("#schedule", Static).update(
                f"Could not count the dataset for the recommendation ({self._facts_error}); the values below are used as they are.")

    def commit(self, strict: bool) -> Optional[str]:
        bad = [f.label for f in self.query(FormField) if f.error]
        if strict and bad:
            return f"Fix {', '.join(bad)} first (the message is on the field)."
        return None
