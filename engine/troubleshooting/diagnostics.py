"""Troubleshooting rules over the event stream: each produces a `finding` event.

The worker feeds every event it writes to `Diagnostician.observe` and appends what comes back to
`events.jsonl`, so the dashboard, the headless replay and a later look at the run folder all see
the same findings. A finding is

    {"event": "finding", "step": 40, "kind": "no_decrease", "message": "...",
     "evidence": {numbers}, "remedies": [remedy, ...]}

with remedies from `engine.troubleshooting.remedies` (concrete session changes, most likely to help first).
Each kind is reported once, and again only when its evidence changes materially.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from engine.session.schema import Session
from engine.troubleshooting import remedies as R
from engine.troubleshooting.remedies import as_session, fmt_lr

# no_decrease: the fitted loss must fall by at least this fraction of its mean across the window...
FLAT_RELATIVE_CHANGE = 0.03
# ...or, for a noisy loss, fall by less than this and by less than DECREASE_T_STAT standard errors
# of the fitted change (no evidence of a decrease: small batches make the loss jump from batch to
# batch, and a fit over a few noisy points can show a drop that is not there).
NOISY_FLAT_CHANGE = 0.10
# ...and the verdict must hold at this many consecutive logs.
FLAT_CONFIRMATIONS = 3
DECREASE_T_STAT = 2.0
# ...over at least this many logged points (fewer is noise, not evidence).
MIN_WINDOW_POINTS = 8
MAX_WINDOW_POINTS = 20
# ...and the run must not have already learned most of what it will (a plateau after a fall is
# convergence, not a failure): the window's mean is still at least this fraction of the start.
STILL_NEAR_START = 0.9
# Residual spread (relative to the mean loss) above which the loss counts as noisy.
NOISY_RESIDUAL = 0.08

# overfitting: eval loss above its best by this fraction, rising over the last evaluations.
OVERFIT_MARGIN = 0.05
OVERFIT_RISES = 2

# divergence: loss above 2 x running minimum + 1 nat, for this many consecutive logs.
DIVERGE_FACTOR = 2.0
DIVERGE_OFFSET = 1.0
DIVERGE_CONSECUTIVE = 2


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _g(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def least_squares(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Slope, intercept and the residuals' standard deviation of y ~ a*x + b."""
    n = len(xs)
    mean_x = sum(xs) / n
    mean_y = sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = 0.0 if sxx == 0 else sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sxx
    intercept = mean_y - slope * mean_x
    residual = [y - (slope * x + intercept) for x, y in zip(xs, ys)]
    spread = math.sqrt(sum(r * r for r in residual) / max(1, n - 2))
    return slope, intercept, spread


def robust_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float, int]:
    """Least squares with one pass of outlier rejection, so one bad batch does not set the trend:
    points further than 3 robust sigmas (1.4826 x the median absolute residual) are dropped."""
    slope, intercept, spread = least_squares(xs, ys)
    residuals = [abs(y - (slope * x + intercept)) for x, y in zip(xs, ys)]
    sigma = 1.4826 * sorted(residuals)[len(residuals) // 2]
    keep = [(x, y) for (x, y), r in zip(zip(xs, ys), residuals) if sigma == 0 or r <= 3 * sigma]
    if len(keep) == len(xs) or len(keep) < 3:
        return slope, intercept, spread, 0
    kx, ky = zip(*keep)
    slope, intercept, spread = least_squares(list(kx), list(ky))
    return slope, intercept, spread, len(xs) - len(keep)


def sign_changes(values: list[float]) -> float:
    """Fraction of consecutive differences that flip sign: 1.0 is a zig-zag, 0.0 a monotone line."""
    diffs = [b - a for a, b in zip(values, values[1:]) if b != a]
    if len(diffs) < 2:
        return 0.0
    flips = sum(1 for a, b in zip(diffs, diffs[1:]) if (a > 0) != (b > 0))
    return flips / (len(diffs) - 1)


@dataclass
class _State:
    logs: list[dict] = field(default_factory=list)  # {step, loss, learning_rate, epoch}
    evals: list[dict] = field(default_factory=list)  # {step, eval_loss}
    checkpoints: dict[int, str] = field(default_factory=dict)
    running_min: float = math.inf
    above_min_streak: int = 0
    flat_streak: int = 0
    reported: dict[str, dict] = field(default_factory=dict)  # kind -> evidence last reported


class Diagnostician:
    """Feed it events in order; it returns the finding events they give rise to.

    `example` is a rendered training example (the worker has it at hand) that the "check the data
    formatting" remedy shows to the person.
    """

    def __init__(self, session: Session | dict, example: Optional[str] = None, train_rows: Optional[int] = None):
        self.session = as_session(session)
        self.example = example
        self.train_rows = train_rows
        self.total_steps: Optional[int] = None
        self.state = _State()

    # -- the stream ---------------------------------------------------------------------------
    def observe(self, event: dict) -> list[dict]:
        kind = event.get("event")
        if kind == "start":
            self.total_steps = event.get("total_steps") or self.total_steps
            resume = event.get("resume_from")
            if resume is None:
                reported = self.state.reported
                self.state = _State(reported=reported)
            return []
        if kind == "data":  # the worker's data report: row count and rendered examples
            self.train_rows = event.get("train_rows") or self.train_rows
            self.example = self.example or example_text(event)
            return []
        if kind == "checkpoint" and _is_number(event.get("step")):
            self.state.checkpoints[int(event["step"])] = str(event.get("path", ""))
            return []
        if kind == "log":
            return self._on_log(event)
        if kind == "eval":
            return self._on_eval(event)
        if kind == "evaluation":
            return self._report(self._task_gain(event))
        return []

    def _on_log(self, event: dict) -> list[dict]:
        loss = event.get("loss")
        step = event.get("step")
        if not _is_number(step) or not _is_number(loss):
            return []
        step = int(step)
        if _is_number(event.get("total_steps")):
            self.total_steps = int(event["total_steps"])
        # Loss only: with fp16 the gradient norm is inf on the steps the loss scaler skips, harmlessly.
        if not math.isfinite(loss):
            return self._report(self._nan(step, event))
        self.state.logs.append({
            "step": step, "loss": float(loss),
            "learning_rate": event.get("learning_rate"), "epoch": event.get("epoch"),
        })
        findings = []
        findings += self._report(self._divergence(step, float(loss)))
        findings += self._report(self._no_decrease())
        return findings

    def _on_eval(self, event: dict) -> list[dict]:
        if not _is_number(event.get("step")) or not _finite(event.get("eval_loss")):
            return []
        self.state.evals.append({"step": int(event["step"]), "eval_loss": float(event["eval_loss"])})
        return self._report(self._overfitting())

    # -- reporting once -----------------------------------------------------------------------
    def _report(self, finding: Optional[dict]) -> list[dict]:
        if finding is None:
            return []
        kind = finding["kind"]
        previous = self.state.reported.get(kind)
        if previous is not None and not _changed_materially(kind, previous, finding["evidence"]):
            return []
        self.state.reported[kind] = finding["evidence"]
        return [finding]

    def _finding(self, kind: str, step: int, message: str, evidence: dict, remedies: list) -> dict:
        return {
            "event": "finding", "step": step, "kind": kind, "message": message,
            "evidence": evidence, "remedies": [r for r in remedies if r],
        }

    # -- rules --------------------------------------------------------------------------------
    def _nan(self, step: int, event: dict) -> dict:
        s = self.session
        loss, grad = event.get("loss"), event.get("grad_norm")
        message = (
            f"At step {step} the loss is {loss}: training has broken down numerically. "
            f"The learning rate is {fmt_lr(s.training.learning_rate)} with warmup_ratio {s.training.warmup_ratio:g}; "
            "a lower rate, a longer warm-up, or a different precision usually fixes it."
        )
        evidence = {"step": step, "loss": _jsonable_number(loss), "grad_norm": _jsonable_number(grad),
                    "learning_rate": s.training.learning_rate}
        return self._finding("nan", step, message, evidence, [
            R.lower_learning_rate(s, 0.2), R.more_warmup(s), R.clip_gradients(s), R.check_precision(s),
        ])

    def _divergence(self, step: int, loss: float) -> Optional[dict]:
        st = self.state
        if len(st.logs) > 1 and loss > st.running_min * DIVERGE_FACTOR + DIVERGE_OFFSET:
            st.above_min_streak += 1
        else:
            st.above_min_streak = 0
        st.running_min = min(st.running_min, loss)
        if st.above_min_streak < DIVERGE_CONSECUTIVE:
            return None
        s = self.session
        best = min(st.logs[:-1], key=lambda log: log["loss"])
        message = (
            f"The loss is exploding: {loss:.3g} at step {step}, against a best of {best['loss']:.3g} at step "
            f"{best['step']} ({loss / best['loss']:.1f}x) for {st.above_min_streak} logs running. "
            f"The learning rate {fmt_lr(s.training.learning_rate)} is likely too high for this model and data."
        )
        evidence = {"step": step, "loss": _g(loss), "min_loss": _g(best["loss"]), "min_step": best["step"],
                    "ratio": _g(loss / best["loss"], 3), "consecutive": st.above_min_streak,
                    "learning_rate": s.training.learning_rate}
        return self._finding("divergence", step, message, evidence, [
            R.lower_learning_rate(s, 0.25), R.more_warmup(s), R.clip_gradients(s), R.check_precision(s),
        ])

    def _no_decrease(self) -> Optional[dict]:
        # Warm-up logs are left out: the rate is still ramping up, a slow start there is expected.
        warmup_steps = math.ceil(self.session.training.warmup_ratio * (self.total_steps or 0))
        logs = [log for log in self.state.logs if log["step"] > warmup_steps]
        if len(logs) < MIN_WINDOW_POINTS or self.state.above_min_streak > 0:
            return None  # a loss climbing away from its minimum is divergence's to report
        window = logs[-MAX_WINDOW_POINTS:]
        steps = [float(log["step"]) for log in window]
        losses = [log["loss"] for log in window]
        if steps[-1] == steps[0]:
            return None
        slope, _, spread, outliers = robust_fit(steps, losses)
        mean_loss = sorted(losses)[len(losses) // 2] if outliers else sum(losses) / len(losses)
        if mean_loss <= 0:
            return None
        relative_change = slope * (steps[-1] - steps[0]) / mean_loss
        start_loss = sum(log["loss"] for log in logs[:4]) / len(logs[:4])
        sxx = sum((x - sum(steps) / len(steps)) ** 2 for x in steps)
        change_stderr = spread / math.sqrt(sxx) * (steps[-1] - steps[0]) / mean_loss if sxx else math.inf
        clear_fall = relative_change <= -FLAT_RELATIVE_CHANGE and (
            relative_change <= -NOISY_FLAT_CHANGE or -relative_change >= DECREASE_T_STAT * change_stderr
        )
        if clear_fall or mean_loss < STILL_NEAR_START * start_loss:
            self.state.flat_streak = 0
            return None
        # One flat window among noisy logs happens by chance: the verdict must hold for a few logs.
        self.state.flat_streak += 1
        if self.state.flat_streak < FLAT_CONFIRMATIONS:
            return None

        s = self.session
        noise = spread / mean_loss
        zigzag = sign_changes(losses)
        rates = [log["learning_rate"] for log in window if _finite(log["learning_rate"])]
        applied_lr = sum(rates) / len(rates) if rates else None
        typical = R.TYPICAL_LR[s.method]
        lr = s.training.learning_rate
        step_a, step_b = int(steps[0]), int(steps[-1])

        if lr < typical / 10 or (applied_lr is not None and applied_lr < typical / 10):
            why = (f"the learning rate {fmt_lr(lr)} is far below the usual {fmt_lr(typical)} for "
                   f"{s.method}, so the weights barely move")
            order = ["raise_learning_rate", "raise_rank", "check_data"]
        elif relative_change > 0 or (noise > NOISY_RESIDUAL and zigzag > 0.6):
            why = (f"the loss oscillates (spread {noise:.0%} of its mean, direction flips on {zigzag:.0%} of "
                   f"logs){', and drifts up' if relative_change > 0 else ''}: steps overshoot, so a lower rate helps")
            order = ["lower_learning_rate", "check_data", "raise_rank"]
        else:
            why = ("the loss is smooth but flat: the adapter may lack capacity, or the rate is too cautious; "
                   "if the rendered examples look wrong, the data is the cause")
            order = ["raise_rank", "raise_learning_rate", "check_data"]

        candidates = {
            "raise_learning_rate": R.raise_learning_rate(s, applied_lr),
            "lower_learning_rate": R.lower_learning_rate(s, 0.3),
            "raise_rank": R.raise_rank(s),
            "check_data": R.check_data(s, self.example),
        }
        remedies = [candidates[name] for name in order]  # the evidence decides which, and in what order
        message = (
            f"Loss is not decreasing: over steps {step_a}-{step_b} ({len(window)} logs) the fitted trend changes "
            f"it by {relative_change:+.1%} \u00b1 {change_stderr:.1%} (mean {mean_loss:.3f}; it started at "
            f"{start_loss:.3f}). Likely cause: {why}."
        )
        evidence = {
            "from_step": step_a, "to_step": step_b, "points": len(window),
            "relative_change": _g(relative_change, 3), "mean_loss": _g(mean_loss), "start_loss": _g(start_loss),
            "slope_per_step": _g(slope, 3), "change_stderr": _g(change_stderr, 3),
            "noise": _g(noise, 3), "zigzag": _g(zigzag, 3),
            "learning_rate": lr, "applied_learning_rate": None if applied_lr is None else _g(applied_lr, 3),
            "outliers_dropped": outliers,
        }
        return self._finding("no_decrease", step_b, message, evidence, remedies)

    def _overfitting(self) -> Optional[dict]:
        evals = self.state.evals
        if len(evals) < OVERFIT_RISES + 1:
            return None
        best_index = min(range(len(evals)), key=lambda i: evals[i]["eval_loss"])
        best, last = evals[best_index], evals[-1]
        after = evals[best_index:]
        if len(after) < OVERFIT_RISES + 1 or last["eval_loss"] < best["eval_loss"] * (1 + OVERFIT_MARGIN):
            return None
        tail = [e["eval_loss"] for e in evals[-(OVERFIT_RISES + 1):]]
        if not all(b > a for a, b in zip(tail, tail[1:])):
            return None
        train_at_best = self._train_loss_near(best["step"])
        train_now = self._train_loss_near(last["step"])
        if train_at_best is None or train_now is None or train_now >= train_at_best:
            return None

        s = self.session
        checkpoint = self._checkpoint_at(best["step"])
        best_epoch = self._epoch_at(best["step"])
        message = (
            f"Overfitting: eval loss rose from its best {best['eval_loss']:.3f} at step {best['step']} to "
            f"{last['eval_loss']:.3f} at step {last['step']} over {len(after) - 1} evaluations, while train loss "
            f"fell from {train_at_best:.3f} to {train_now:.3f}. The model is memorising the training rows; "
            f"the best adapter is the one at step {best['step']}."
        )
        evidence = {
            "best_step": best["step"], "best_eval_loss": _g(best["eval_loss"]),
            "last_step": last["step"], "last_eval_loss": _g(last["eval_loss"]),
            "evaluations_since_best": len(after) - 1,
            "train_loss_at_best": _g(train_at_best), "train_loss_now": _g(train_now),
            "best_epoch": None if best_epoch is None else _g(best_epoch, 3),
            "best_checkpoint": checkpoint,
        }
        remedies = [
            R.stop_at_best(s, best["step"], checkpoint),
            R.fewer_epochs(s, best_epoch),
            R.more_dropout(s),
            R.more_data(s, self.train_rows),
        ]
        return self._finding("overfitting", last["step"], message, evidence, remedies)

    def _task_gain(self, event: dict) -> Optional[dict]:
        """no_task_gain: the end-of-run evaluation against the loss (engine.troubleshooting.task_gain)."""
        from engine.troubleshooting.task_gain import task_gain_finding

        step = self.state.logs[-1]["step"] if self.state.logs else 0
        found = task_gain_finding(self.session, [log["loss"] for log in self.state.logs], event, self.example)
        return None if found is None else self._finding("no_task_gain", step, *found)

    def _checkpoint_at(self, step: int) -> Optional[str]:
        """The checkpoint saved at `step`: from a checkpoint event, else from the run folder (the
        Trainer writes `checkpoint-N` there; it may be deleted later by save_total_limit)."""
        if step in self.state.checkpoints:
            return self.state.checkpoints[step]
        folder = Path(self.session.output.dir) / f"checkpoint-{step}"
        return str(folder) if folder.is_dir() else None

    def _train_loss_near(self, step: int) -> Optional[float]:
        """Mean of the last three train losses logged at or before `step` (one log is noise)."""
        before = [log["loss"] for log in self.state.logs if log["step"] <= step][-3:]
        return sum(before) / len(before) if before else None

    def _epoch_at(self, step: int) -> Optional[float]:
        epochs = [log["epoch"] for log in self.state.logs if log["step"] <= step and _finite(log["epoch"])]
        if epochs:
            return float(epochs[-1])
        if self.total_steps and self.session.training.max_steps <= 0:
            return step / self.total_steps * float(self.session.training.num_train_epochs)
        return None


def example_text(data_event: dict) -> Optional[str]:
    """The first rendered example of a `data` event, with the trained part between the markers."""
    examples = data_event.get("examples") or []
    if not examples:
        return None
    first = examples[0]
    if isinstance(first, str):
        return first
    segments = first.get("segments")
    if segments:
        return "".join(f"\u25b6{text}\u25c0" if trained else text for text, trained in segments)
    return first.get("text")


def _jsonable_number(value: Any) -> Any:
    """NaN and inf are not JSON: keep them as the words a person reads."""
    if _is_number(value) and not math.isfinite(value):
        return str(value)
    return value


def _changed_materially(kind: str, before: dict, now: dict) -> bool:
    if kind == "no_decrease":
        return abs(now["mean_loss"] - before["mean_loss"]) > 0.2 * before["mean_loss"]
    if kind == "overfitting":
        # A worse overfit is the same news; a new best step (a new dip, then a new rise) is not.
        return now["best_step"] != before["best_step"]
    if kind == "divergence":
        return now["loss"] > 2 * before["loss"]
    if kind == "no_task_gain":  # a new evaluation (lora-tui eval) that moved
        return abs(now["tuned_exact_match"] - before["tuned_exact_match"]) >= 0.1
    return False  # nan and oom: once is enough
