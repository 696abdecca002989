"""The no_task_gain rule: the loss fell, but does the model now do the task?

The end-of-run evaluation (engine.evaluation.evaluate) scores the base and the tuned model's greedy
answers on the eval split. Loss can fall while the answers stay wrong (a format half learned,
answers that never stop), and a person reading the loss chart would not know: this rule says so,
with remedies. `Diagnostician` calls it for every `evaluation` event.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from engine.session.schema import Session
from engine.troubleshooting import remedies as R

# The tuned model's exact match on the eval split must beat the base's by this much (absolute)...
TASK_GAIN_MIN = 0.10
# ...and reach this rate, or the run is reported as not (yet) doing the task.
TASK_DONE = 0.5
# The loss counts as fallen when its last logs average this fraction of its first logs or less.
LOSS_FELL = 0.8


def task_gain_finding(session: Session, losses: list[float], event: dict,
                      example: Optional[str] = None) -> Optional[tuple[str, dict, list]]:
    """(message, evidence, remedies) when the evaluation shows the task not learned, else None."""
    base, tuned = event.get("base") or {}, event.get("tuned") or {}
    if event.get("split") != "eval" or not _finite(base.get("exact_match")) or not _finite(tuned.get("exact_match")):
        return None
    before, after, rows = base["exact_match"], tuned["exact_match"], int(tuned.get("rows") or 0)
    gained = after - before >= TASK_GAIN_MIN
    if gained and after >= TASK_DONE:
        return None
    first, last = _mean(losses[:3]), _mean(losses[-3:])
    fell = first is not None and last is not None and len(losses) >= 4 and last <= LOSS_FELL * first
    exact = f"exact match {before:.0%} for the base and {after:.0%} fine-tuned on {rows} eval rows"
    json_part = ""
    if tuned.get("json_rows"):
        json_part = (f" (valid JSON {_pct(base.get('valid_json'))} → {_pct(tuned.get('valid_json'))}, fields right "
                     f"{_pct(base.get('field_accuracy'))} → {_pct(tuned.get('field_accuracy'))})")
    if not gained:
        lead = (f"Loss fell from {first:.3f} to {last:.3f}, but exact match did not rise: " if fell
                else "The fine-tuned model does not answer the eval rows better than the base: ")
        message = lead + exact + json_part + ". Training has not taught the task yet."
    else:
        message = (f"The model is learning the task but is not there yet: {exact}{json_part}. "
                   "Longer training or a higher learning rate usually closes the gap.")
    remedies = [train_longer(session), R.raise_learning_rate(session)]
    if session.dataset.template == "alpaca" and event.get("has_chat_template"):
        remedies.append(R.make_remedy("use_chat_template", "Train in the model's own chat template (dataset.template: chat)",
                                      {"dataset.template": "chat"}, R.FRESH))
    remedies.append(R.check_data(session, example))
    evidence = {"base_exact_match": before, "tuned_exact_match": after, "rows": rows,
                "first_loss": _round(first), "last_loss": _round(last),
                "tuned_valid_json": tuned.get("valid_json"), "tuned_field_accuracy": tuned.get("field_accuracy")}
    return message, evidence, remedies


def train_longer(session: Session) -> dict:
    """Twice the training: max_steps when the run counts steps, else epochs."""
    t = session.training
    if t.max_steps > 0:
        return R.make_remedy("train_longer", f"Train longer: max_steps {t.max_steps} to {2 * t.max_steps}",
                             {"training.max_steps": 2 * t.max_steps}, R.FRESH)
    epochs = float(t.num_train_epochs)
    return R.make_remedy("train_longer", f"Train longer: num_train_epochs {epochs:g} to {2 * epochs:g}",
                         {"training.num_train_epochs": 2 * epochs}, R.FRESH)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else float(f"{value:.4g}")


def _pct(rate: Any) -> str:
    return f"{rate:.0%}" if _finite(rate) else "-"
