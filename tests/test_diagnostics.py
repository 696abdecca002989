"""The troubleshooting rules on event sequences shaped like real runs, and on real runs built to
go wrong (marked `training`)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from engine.session.schema import Session
from engine.troubleshooting.diagnostics import Diagnostician, least_squares, sign_changes
from engine.troubleshooting.oom import finding as oom_finding
from engine.troubleshooting.remedies import apply_remedy


def make_session(**training) -> Session:
    return Session.model_validate({"dataset": {"path": "data/train.jsonl"}, "training": training})


def log(step, loss, lr=2e-4, epoch=None, grad_norm=1.0):
    return {"event": "log", "step": step, "loss": loss, "learning_rate": lr, "grad_norm": grad_norm,
            "epoch": epoch if epoch is not None else step / 100}


def feed(diag: Diagnostician, events) -> list[dict]:
    found = []
    for event in events:
        found += diag.observe(event)
    return found


def kinds(findings) -> list[str]:
    return [f["kind"] for f in findings]


def remedy_ids(finding) -> list[str]:
    return [r["id"] for r in finding["remedies"]]


# -- maths --------------------------------------------------------------------------------------------

def test_least_squares_recovers_a_line():
    slope, intercept, spread = least_squares([0, 1, 2, 3], [1, 3, 5, 7])
    assert slope == pytest.approx(2) and intercept == pytest.approx(1) and spread == pytest.approx(0)


def test_sign_changes_tell_zigzag_from_monotone():
    assert sign_changes([1, 2, 1, 2, 1, 2]) == 1.0
    assert sign_changes([5, 4, 3, 2, 1]) == 0.0


# -- a healthy run says nothing -------------------------------------------------------------------------

def healthy_losses(n=60, seed=0):
    rng = random.Random(seed)
    return [1.2 + 2.6 * math.exp(-step / 12) + rng.gauss(0, 0.04) for step in range(1, n + 1)]


def test_healthy_run_has_no_findings():
    diag = Diagnostician(make_session())
    events = [{"event": "start", "total_steps": 60, "resume_from": None}]
    events += [log(step, loss) for step, loss in enumerate(healthy_losses(), start=1)]
    assert feed(diag, events) == []


def test_plateau_after_learning_is_convergence_not_a_finding():
    # falls from 3.8 to 1.2, then 40 flat logs: the flat tail alone must not read as "not learning"
    rng = random.Random(1)
    losses = healthy_losses(40) + [1.2 + rng.gauss(0, 0.03) for _ in range(40)]
    diag = Diagnostician(make_session())
    assert feed(diag, [log(step, loss) for step, loss in enumerate(losses, start=1)]) == []


# -- no_decrease --------------------------------------------------------------------------------------

def test_tiny_learning_rate_gives_no_decrease_with_raise_lr_first():
    # lr 1e-9: the loss only moves with batch content, around its starting value
    rng = random.Random(2)
    session = make_session(learning_rate=1e-9, logging_steps=1)
    diag = Diagnostician(session, example="### Instruction:\nhi\n\n### Response:\nhello")
    findings = feed(diag, [log(step, 3.8 + rng.gauss(0, 0.15), lr=1e-9) for step in range(1, 25)])
    assert kinds(findings) == ["no_decrease"]
    finding = findings[0]
    assert remedy_ids(finding)[0] == "raise_learning_rate"
    assert finding["remedies"][0]["changes"] == {"training.learning_rate": 2e-4}
    assert "1e-9" in finding["message"] and "2e-4" in finding["message"]
    ev = finding["evidence"]
    # no evidence of a fall: the fitted change is within two standard errors of zero
    assert ev["points"] >= 8 and abs(ev["relative_change"]) < 2 * ev["change_stderr"]
    check = next(r for r in finding["remedies"] if r["id"] == "check_data")
    assert check["example"].startswith("### Instruction:")
    # the remedy really changes the session
    fixed = apply_remedy(session, finding["remedies"][0])
    assert fixed.training.learning_rate == 2e-4
    json.dumps(findings, allow_nan=False)


def test_oscillating_loss_suggests_lowering_the_rate_first():
    rng = random.Random(3)
    session = make_session(learning_rate=1e-3)
    losses = [2.6 + (0.45 if step % 2 else -0.45) + rng.gauss(0, 0.05) for step in range(1, 21)]
    findings = feed(Diagnostician(session), [log(s, loss, lr=1e-3) for s, loss in enumerate(losses, start=1)])
    assert kinds(findings) == ["no_decrease"]
    assert remedy_ids(findings[0])[0] == "lower_learning_rate"
    assert findings[0]["remedies"][0]["changes"]["training.learning_rate"] == pytest.approx(3e-4)
    assert "oscillates" in findings[0]["message"]


def test_smooth_flat_loss_at_a_normal_rate_suggests_rank_first():
    session = make_session(learning_rate=2e-4)
    losses = [2.5 - 0.0005 * step for step in range(1, 21)]
    findings = feed(Diagnostician(session), [log(s, loss) for s, loss in enumerate(losses, start=1)])
    assert kinds(findings) == ["no_decrease"]
    assert remedy_ids(findings[0])[:2] == ["raise_rank", "raise_learning_rate"]
    rank = findings[0]["remedies"][0]
    assert rank["changes"] == {"lora.r": 32, "lora.lora_alpha": 64} and rank["restart"] == "fresh"


def test_a_noisy_but_clearly_falling_loss_is_not_flat():
    # batch-to-batch noise of 10%, but a fall of a third across the window: learning
    rng = random.Random(9)
    losses = [3.0 * (1 - 0.02 * step) * (1 + rng.gauss(0, 0.1)) for step in range(1, 21)]
    assert feed(Diagnostician(make_session()), [log(s, loss) for s, loss in enumerate(losses, start=1)]) == []


def test_no_decrease_needs_a_window_not_one_comparison():
    rng = random.Random(4)
    flat = [log(step, 3.8 + rng.gauss(0, 0.1), lr=1e-9) for step in range(1, 6)]
    assert feed(Diagnostician(make_session(learning_rate=1e-9)), flat) == []


def test_warmup_logs_do_not_count_as_flat():
    # 10 flat logs while the rate ramps up over 10 of 100 steps, then a healthy fall
    session = make_session(warmup_ratio=0.1)
    events = [{"event": "start", "total_steps": 100, "resume_from": None}]
    events += [log(s, 3.8, lr=2e-4 * s / 10) for s in range(1, 11)]
    events += [log(s, 3.8 * math.exp(-(s - 10) / 15) + 1.0) for s in range(11, 30)]
    assert feed(Diagnostician(session), events) == []
    # the same flat start without the warm-up is reported
    assert kinds(feed(Diagnostician(make_session(warmup_ratio=0.0)), events[:11])) == ["no_decrease"]


def test_no_decrease_is_reported_once_then_again_only_when_the_level_moves():
    rng = random.Random(5)
    diag = Diagnostician(make_session(learning_rate=1e-9))
    first = feed(diag, [log(s, 3.8 + rng.gauss(0, 0.1), lr=1e-9) for s in range(1, 40)])
    assert kinds(first) == ["no_decrease"]
    # the same flat level: nothing new
    assert feed(diag, [log(s, 3.8 + rng.gauss(0, 0.1), lr=1e-9) for s in range(40, 60)]) == []
    # a new, higher flat level (material change): reported again
    again = feed(diag, [log(s, 6.0 + rng.gauss(0, 0.1), lr=1e-9) for s in range(60, 100)])
    assert "no_decrease" in kinds(again)


# -- overfitting --------------------------------------------------------------------------------------

def memorisation_events():
    """The shape ENVIRONMENT.md measured on CPU: eval bottoms at 1.73 (step 8), climbs to 3.68 by
    step 40, train falls to 0.06."""
    train = {s: 3.9 * math.exp(-s / 7) + 0.05 for s in range(1, 41)}
    evals = {4: 2.45, 8: 1.73, 12: 1.95, 16: 2.31, 20: 2.62, 24: 2.95, 28: 3.2, 32: 3.41, 36: 3.55, 40: 3.68}
    events = [{"event": "start", "total_steps": 40, "resume_from": None}]
    for step in range(1, 41):
        events.append(log(step, train[step], lr=2e-3, epoch=step / 2))
        if step in evals:
            events.append({"event": "eval", "step": step, "eval_loss": evals[step]})
        if step % 8 == 0:
            events.append({"event": "checkpoint", "step": step, "path": f"runs/x/checkpoint-{step}"})
    return events


def test_memorisation_is_overfitting_and_names_the_best_checkpoint():
    session = make_session(learning_rate=2e-3, num_train_epochs=20, eval_steps=4)
    findings = [f for f in feed(Diagnostician(session, train_rows=7), memorisation_events()) if f["kind"] == "overfitting"]
    assert len(findings) == 1
    finding = findings[0]
    ev = finding["evidence"]
    assert ev["best_step"] == 8 and ev["best_eval_loss"] == 1.73 and ev["best_checkpoint"] == "runs/x/checkpoint-8"
    assert ev["train_loss_now"] < ev["train_loss_at_best"]
    assert finding["step"] == 16  # found at the second rise, not at the end of the run
    ids = remedy_ids(finding)
    assert ids == ["stop_at_best", "fewer_epochs", "more_dropout", "more_data"]
    stop = finding["remedies"][0]
    assert stop["changes"] == {"training.max_steps": 8} and "step 8" in stop["label"]
    assert "checkpoint-8" in stop["label"]
    assert finding["remedies"][1]["changes"] == {"training.num_train_epochs": 4.0}  # epoch at step 8
    assert apply_remedy(session, finding["remedies"][2]).lora.lora_dropout == 0.1
    assert "7 training rows" in finding["remedies"][3]["label"]
    assert "1.730" in finding["message"] and "step 8" in finding["message"]


def test_best_checkpoint_is_found_in_the_run_folder_without_checkpoint_events(tmp_path):
    (tmp_path / "checkpoint-8").mkdir()
    session = Session.model_validate({"dataset": {"path": "d.jsonl"}, "output": {"dir": str(tmp_path)},
                                      "training": {"eval_steps": 4}})
    events = [e for e in memorisation_events() if e["event"] != "checkpoint"]
    finding = next(f for f in feed(Diagnostician(session), events) if f["kind"] == "overfitting")
    assert finding["evidence"]["best_checkpoint"] == str(tmp_path / "checkpoint-8")


def test_one_rise_in_eval_loss_is_not_yet_overfitting():
    events = [log(s, 2.0 - s * 0.01) for s in range(1, 13)]
    events += [{"event": "eval", "step": 4, "eval_loss": 2.0}, {"event": "eval", "step": 8, "eval_loss": 1.8},
               {"event": "eval", "step": 12, "eval_loss": 1.95}]
    assert "overfitting" not in kinds(feed(Diagnostician(make_session()), events))


def test_eval_rising_with_train_rising_is_not_overfitting():
    events = []
    for s in range(1, 21):
        events.append(log(s, 1.0 + 0.02 * s))
        if s % 4 == 0:
            events.append({"event": "eval", "step": s, "eval_loss": 1.0 + 0.05 * s})
    assert "overfitting" not in kinds(feed(Diagnostician(make_session()), events))


# -- nan and divergence -------------------------------------------------------------------------------

def test_nan_loss_is_reported_once_and_stays_json():
    diag = Diagnostician(make_session(learning_rate=5e-3))
    events = [log(1, 3.0), log(2, 2.8), log(3, float("nan"), grad_norm=float("inf")), log(4, float("nan"))]
    findings = feed(diag, events)
    assert kinds(findings) == ["nan"]
    assert remedy_ids(findings[0])[:2] == ["lower_learning_rate", "more_warmup"]
    assert findings[0]["remedies"][0]["changes"] == {"training.learning_rate": 1e-3}
    assert findings[0]["evidence"]["loss"] == "nan"
    json.dumps(findings, allow_nan=False)


def test_exploding_loss_is_divergence():
    losses = [3.0, 2.6, 2.2, 2.0, 1.9, 3.5, 6.1, 9.8, 15.0]
    findings = feed(Diagnostician(make_session(learning_rate=3e-3)), [log(s, loss, lr=3e-3) for s, loss in enumerate(losses, 1)])
    assert kinds(findings) == ["divergence"]
    ev = findings[0]["evidence"]
    assert ev["min_loss"] == 1.9 and ev["min_step"] == 5 and ev["step"] == 8
    assert remedy_ids(findings[0])[0] == "lower_learning_rate"


def test_one_bad_batch_is_not_divergence():
    losses = [3.0, 2.6, 2.2, 2.0, 6.0, 1.9, 1.85, 1.8]
    assert feed(Diagnostician(make_session()), [log(s, loss) for s, loss in enumerate(losses, 1)]) == []


# -- oom ------------------------------------------------------------------------------------------------

def test_oom_finding_orders_remedies_by_cost_and_each_applies():
    session = make_session(gradient_checkpointing=False, per_device_train_batch_size=8, gradient_accumulation_steps=2)
    finding = oom_finding(session, 12, "CUDA out of memory. Tried to allocate 2.00 GiB.\nmore details")
    assert finding["event"] == "finding" and finding["kind"] == "oom" and finding["step"] == 12
    assert remedy_ids(finding) == ["gradient_checkpointing", "halve_batch", "qlora", "shorter_sequences"]
    assert "at step 12" in finding["message"] and "Tried to allocate 2.00 GiB" in finding["message"]
    halved = apply_remedy(session, finding["remedies"][1])
    assert (halved.training.per_device_train_batch_size, halved.training.gradient_accumulation_steps) == (4, 4)
    assert halved.effective_batch_size == session.effective_batch_size
    assert apply_remedy(session, finding["remedies"][2]).method == "qlora"
    assert apply_remedy(session, finding["remedies"][3]).model.max_seq_length == 256
    assert all("estimate_gb" in r for r in finding["remedies"])
    json.dumps(finding, allow_nan=False)


def test_start_event_without_resume_forgets_the_previous_run():
    rng = random.Random(6)
    diag = Diagnostician(make_session(learning_rate=1e-9))
    feed(diag, [log(s, 3.8 + rng.gauss(0, 0.1), lr=1e-9) for s in range(1, 5)])
    diag.observe({"event": "start", "total_steps": 40, "resume_from": None})
    assert diag.state.logs == []


# -- real runs built to go wrong --------------------------------------------------------------------------

def _train(tmp_path: Path, rows: list[dict], **overrides) -> list[dict]:
    """Train the demo model through `lora-tui --replay`, as a person would; return the run's events."""
    from tests.conftest import events_of, run_cli, small_session, write_session

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    session = small_session(tmp_path, dataset__path=str(data), model__max_seq_length=64,
                            training__optim="adamw_torch", **overrides)
    done = run_cli("--replay", str(write_session(tmp_path, session)), timeout=2400)  # a shared, busy CPU
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    return events_of(tmp_path / "run")


@pytest.mark.training
def test_real_run_with_learning_rate_1e9_reports_no_decrease(tmp_path):
    rng = random.Random(7)
    rows = [{"instruction": "Repeat the word.", "output": "".join(rng.choice("abcdefghij") for _ in range(6))}
            for _ in range(40)]
    events = _train(tmp_path, rows, training__learning_rate=1e-9, training__max_steps=14,
                    training__per_device_train_batch_size=8)  # less batch-to-batch noise
    findings = [e for e in events if e["event"] == "finding"]
    assert [f["kind"] for f in findings] == ["no_decrease"], findings
    finding = findings[0]
    assert finding["remedies"][0]["id"] == "raise_learning_rate"
    assert finding["remedies"][0]["changes"] == {"training.learning_rate": 2e-4}
    ev = finding["evidence"]
    assert ev["relative_change"] > -2 * ev["change_stderr"] and ev["applied_learning_rate"] < 1e-8


@pytest.mark.training
def test_real_memorisation_run_reports_overfitting(tmp_path):
    # ENVIRONMENT.md: random 24-letter strings, some held out, LoRA at lr 2e-3 memorises them
    rng = random.Random(8)
    rows = [{"instruction": "Say the code.", "output": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(24))}
            for _ in range(10)]
    events = _train(tmp_path, rows, dataset__eval_fraction=0.3, lora__lora_dropout=0.0,
                    training__learning_rate=2e-3, training__max_steps=16, training__logging_steps=2,
                    training__eval_steps=4, training__save_steps=4, training__per_device_train_batch_size=4)
    findings = [e for e in events if e["event"] == "finding" and e["kind"] == "overfitting"]
    assert findings, [e for e in events if e["event"] in ("eval", "finding", "error")]
    finding = findings[0]
    best = finding["evidence"]["best_step"]
    assert finding["remedies"][0] == {**finding["remedies"][0], "id": "stop_at_best",
                                      "changes": {"training.max_steps": best}}
    assert finding["evidence"]["best_checkpoint"].endswith(f"checkpoint-{best}")
    assert finding["evidence"]["train_loss_now"] < finding["evidence"]["train_loss_at_best"]
    # save_total_limit (3) rotated older checkpoints away, never the best one the finding names
    kept = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "run").glob("checkpoint-*"))
    assert best in kept and kept[-1] == 16, kept
