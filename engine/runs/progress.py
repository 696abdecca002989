"""A run's state, folded from its event stream: the one reading that every front end shares.

The dashboard, `lora-tui runs`, the supervisor and the headless progress line all fold events
into a `RunProgress` and show its fields; none reads events its own way. No Textual, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


def _number(value) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class RunProgress:
    """Everything known about a run from its events. `apply` one event at a time, in file order."""

    total_steps: Optional[int] = None
    step: int = 0
    epoch: Optional[float] = None
    elapsed: Optional[float] = None
    eta_seconds: Optional[float] = None
    tokens_per_second: Optional[float] = None
    samples_per_second: Optional[float] = None
    tokens_seen: Optional[int] = None
    memory_gb: Optional[float] = None
    memory_gb_ranks: list[float] = field(default_factory=list)  # each process's peak, when several train
    learning_rate: Optional[float] = None
    grad_norm: Optional[float] = None
    last_loss: Optional[float] = None
    train: list[tuple[float, float]] = field(default_factory=list)
    evals: list[tuple[float, float]] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)  # latest per kind, in order of arrival
    notes: list[str] = field(default_factory=list)  # automatic retries and the like
    status_word: str = "waiting"
    status_detail: str = "for the worker to start"
    pid: Optional[int] = None
    host: Optional[str] = None
    world_size: int = 1
    gpu: Optional[str] = None  # the first GPU's name (start event); None on a CPU
    strategy: Optional[str] = None  # "ddp" / "fsdp" when several processes train
    example: Optional[str] = None  # a rendered training example, from the worker's data report
    ended: bool = False
    end_event: Optional[dict] = None
    error_message: str = ""
    started_at: Optional[float] = None  # wall time of the first start event
    last_event_at: Optional[float] = None
    events_seen: int = 0

    @property
    def running(self) -> bool:
        return self.status_word == "running"

    @property
    def live(self) -> bool:
        """What the events say: the run has not ended, failed or been found gone."""
        return self.status_word in ("waiting", "starting", "running", "paused", "retrying", "stopping")

    def apply(self, event: dict) -> None:
        self.events_seen += 1
        if isinstance(event.get("time"), (int, float)):
            self.last_event_at = float(event["time"])
        handler = getattr(self, f"_on_{event.get('event')}", None)
        if handler is not None:
            handler(event)

    def fold(self, events: Iterable[dict]) -> RunProgress:
        for event in events:
            self.apply(event)
        return self

    # -- one method per event kind -----------------------------------------------------------------
    def _on_start(self, event: dict) -> None:
        resumed_at = event.get("step") or 0
        if event.get("resume_from"):
            # A resumed run repeats nothing before its checkpoint; drop what came after it.
            self.train = [p for p in self.train if p[0] <= resumed_at]
            self.evals = [p for p in self.evals if p[0] <= resumed_at]
        else:
            self.train, self.evals, self.learning_rates, self.grad_norms = [], [], [], []
            self.findings = [f for f in self.findings if f.get("kind") == "oom"]  # why it restarted
        self.total_steps = event.get("total_steps") or self.total_steps
        self.step = int(resumed_at)
        self.pid = event.get("pid") or self.pid
        self.host = event.get("host") or self.host
        self.world_size = int(event.get("world_size") or 1)
        self.memory_gb_ranks = []  # a relaunch may run on fewer processes
        self.gpu = event.get("gpu") or self.gpu
        self.strategy = event.get("strategy") or self.strategy
        if self.started_at is None and isinstance(event.get("time"), (int, float)):
            self.started_at = float(event["time"])
        self.ended, self.end_event, self.error_message = False, None, ""
        self.status_word = "running"
        self.status_detail = f"resumed from {Path(event['resume_from']).name}" if event.get("resume_from") else ""

    def _on_step(self, event: dict) -> None:
        self.step = max(self.step, int(event.get("step") or 0))
        self.total_steps = event.get("total_steps") or self.total_steps
        for name in ("elapsed", "eta_seconds", "tokens_per_second"):
            value = _number(event.get(name))
            if value is not None:
                setattr(self, name, value)
        if isinstance(event.get("tokens"), int):
            self.tokens_seen = event["tokens"]

    def _on_log(self, event: dict) -> None:
        step = event.get("step")
        if isinstance(step, (int, float)):
            self.step = int(step)
        self.total_steps = event.get("total_steps") or self.total_steps
        for name in ("epoch", "elapsed", "eta_seconds", "tokens_per_second", "samples_per_second", "memory_gb"):
            value = _number(event.get(name))
            if value is not None:
                setattr(self, name, value)
        if isinstance(event.get("tokens_seen"), int):
            self.tokens_seen = event["tokens_seen"]
        ranks = event.get("memory_gb_ranks")
        if isinstance(ranks, list) and ranks and all(_number(v) is not None for v in ranks):
            self.memory_gb_ranks = [float(v) for v in ranks]
        loss = event.get("loss")
        if isinstance(loss, (int, float)) and not isinstance(loss, bool):
            self.last_loss = float(loss)
            if math.isfinite(loss):
                self.train.append((self.step, float(loss)))
        elif isinstance(loss, str):  # "nan" / "inf", written as text
            self.last_loss = float("nan")
        lr, grad = _number(event.get("learning_rate")), _number(event.get("grad_norm"))
        if lr is not None:
            self.learning_rate = lr
            self.learning_rates.append(lr)
        if grad is not None:
            self.grad_norm = grad
            self.grad_norms.append(grad)

    def _on_eval(self, event: dict) -> None:
        loss = _number(event.get("eval_loss"))
        if loss is not None and isinstance(event.get("step"), (int, float)):
            self.evals.append((event["step"], loss))

    def _on_finding(self, event: dict) -> None:
        self.findings = [f for f in self.findings if f.get("kind") != event.get("kind")] + [event]

    def _on_data(self, event: dict) -> None:
        from engine.troubleshooting.diagnostics import example_text

        self.example = example_text(event) or self.example

    def _on_status(self, event: dict) -> None:
        state = event.get("state")
        words = {"loading_model": ("starting", "loading the model"), "preparing_data": ("starting", "preparing the data"),
                 "paused": ("paused", f"at step {event.get('step', self.step)}"), "running": ("running", ""),
                 "merging": ("running", "merging the adapter"),
                 "evaluating": ("running", "evaluating base against tuned"),
                 "exporting_gguf": ("running", "exporting and checking a GGUF")}
        if state in words:
            self.status_word, self.status_detail = words[state]

    def _on_retry(self, event: dict) -> None:
        self.notes.append(str(event.get("message", "Retrying.")))
        self.status_word, self.status_detail = "retrying", str(event.get("message", ""))

    def _on_fallback(self, event: dict) -> None:
        # backend "auto": Unsloth could not start, the supervisor restarted on the peft backend.
        self.notes.append(str(event.get("message", "Unsloth cannot start here; falling back to the peft backend.")))
        self.status_word, self.status_detail = "starting", "on the peft backend"

    def _on_error(self, event: dict) -> None:
        self.error_message = str(event.get("message", ""))
        self.status_word, self.status_detail = "failed", self.error_message

    def _on_end(self, event: dict) -> None:
        self.ended, self.end_event = True, event
        self.status_word = str(event.get("status", "completed"))
        if isinstance(event.get("step"), (int, float)):
            self.step = int(event["step"])
        where = event.get("adapter_dir") or event.get("checkpoint")
        self.status_detail = f"at step {self.step}" + (f"; {where}" if where else "")


    # -- what the run costs (issue 20): the GPU's hourly price x the GPUs x the measured time -------------
    def price(self):
        """The hourly price of the run's GPU (engine.planner.cost: the person's prices.json, else the
        shipped example), or None on a CPU or for a GPU without a price."""
        if not self.gpu:
            return None
        if getattr(self, "_price_for", None) != self.gpu:
            from engine.planner.cost import load_prices

            self._price_for, self._price = self.gpu, load_prices(strict=False).for_gpu(self.gpu)
        return self._price

    def cost_so_far(self) -> Optional[float]:
        from engine.planner.cost import cost_of

        return cost_of(self.elapsed, self.price(), self.world_size)

    def cost_to_finish(self) -> Optional[float]:
        """From the measured rate: the ETA (the steps left at the steps' own pace) at the same price."""
        from engine.planner.cost import cost_of

        return cost_of(self.eta_seconds, self.price(), self.world_size) if self.live else None

    def cost_short(self) -> str:
        """'$0.14 so far · $0.46 to go' for the dashboard's narrow panel, or '-' (a CPU, no price)."""
        from engine.planner.cost import money

        price, spent = self.price(), self.cost_so_far()
        if price is None or spent is None:
            return "-"
        more = self.cost_to_finish()
        return f"{money(spent, price.currency)} so far" + (f" · {money(more, price.currency)} to go" if more is not None else "")

    def cost_line(self) -> str:
        """'$0.14 so far, about $0.46 to finish at $0.69/h (example price, 2025-06)', or '-'."""
        from engine.planner.cost import money

        price, spent = self.price(), self.cost_so_far()
        if price is None or spent is None:
            return "-"
        text = f"{money(spent, price.currency)} so far"
        more = self.cost_to_finish()
        if more is not None:
            text += f", about {money(more, price.currency)} to finish"
        count = f" x {self.world_size}" if self.world_size > 1 else ""
        return f"{text} at {price.rate()}{count}"


def progress_of(events: Iterable[dict]) -> RunProgress:
    return RunProgress().fold(events)


def duration(seconds: Optional[float]) -> str:
    """1:02:03 / 4:05 for a person; "?" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
