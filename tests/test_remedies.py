"""Remedies are real session changes: they validate, they keep what must be kept, and the OOM
auto-retry runs out of options instead of looping."""

from __future__ import annotations

import pytest

from engine.errors import SessionError
from engine.session.schema import Session, load_session, save_session
from engine.troubleshooting.oom import cheapest_remedy as cheapest_oom_remedy
from engine.troubleshooting.oom import estimate_peak_gb
from engine.troubleshooting.oom import remedies_for as oom_remedies
from engine.troubleshooting.remedies import (
    apply_remedy,
    clip_gradients,
    lower_learning_rate,
    raise_learning_rate,
    raise_rank,
    round_sig,
)


def make_session(method="lora", backend="auto", **training) -> Session:
    return Session.model_validate({"dataset": {"path": "data/train.jsonl"}, "method": method,
                                   "backend": backend, "training": training})


def test_apply_remedy_returns_a_new_validated_session():
    session = make_session()
    changed = apply_remedy(session, {"id": "x", "changes": {"training.learning_rate": 5e-5, "lora.r": 8}})
    assert changed.training.learning_rate == 5e-5 and changed.lora.r == 8
    assert session.training.learning_rate == 2e-4 and session.lora.r == 16  # the original is untouched


def test_apply_remedy_refuses_an_unknown_field_by_name():
    with pytest.raises(SessionError, match="training.learnig_rate"):
        apply_remedy(make_session(), {"id": "typo", "changes": {"training.learnig_rate": 1e-4}})


def test_apply_remedy_refuses_an_invalid_value_naming_the_field():
    with pytest.raises(SessionError, match="lora_dropout"):
        apply_remedy(make_session(), {"id": "bad", "changes": {"lora.lora_dropout": 1.5}})
    with pytest.raises(SessionError, match="lora.r"):
        apply_remedy(make_session(), {"id": "bad", "changes": {"lora.r": "32"}})  # strict: a string is not a rank


def test_remedy_result_saves_and_loads(tmp_path):
    changed = apply_remedy(make_session(), raise_rank(make_session()))
    path = save_session(changed, tmp_path / "session.json")
    assert load_session(path, resolve_paths=False).lora.r == 32


def test_learning_rate_remedies_are_values_a_person_would_type():
    assert round_sig(2e-4 * 0.3) == 6e-5
    assert lower_learning_rate(make_session(learning_rate=2e-4), 0.3)["changes"] == {"training.learning_rate": 6e-5}
    assert raise_learning_rate(make_session(learning_rate=1e-9))["changes"] == {"training.learning_rate": 2e-4}
    assert raise_learning_rate(make_session(learning_rate=2e-4))["changes"] == {"training.learning_rate": 4e-4}
    assert raise_learning_rate(make_session(method="full", learning_rate=1e-7))["changes"] == {"training.learning_rate": 2e-5}
    assert raise_learning_rate(make_session(learning_rate=0.003)) is None  # already far above the usual


def test_learning_rate_changes_restart_fresh_because_a_checkpoint_restores_the_scheduler():
    assert lower_learning_rate(make_session())["restart"] == "fresh"
    assert clip_gradients(make_session())["restart"] == "resume"


def test_full_fine_tuning_has_no_rank_to_raise():
    assert raise_rank(make_session(method="full")) is None


def test_oom_remedies_skip_what_is_already_done():
    session = make_session(method="qlora", gradient_checkpointing="unsloth", per_device_train_batch_size=1)
    ids = [r["id"] for r in oom_remedies(session)]
    assert ids == ["shorter_sequences"]


def test_gradient_checkpointing_value_follows_the_backend():
    assert oom_remedies(make_session(gradient_checkpointing=False))[0]["changes"] == {"training.gradient_checkpointing": "unsloth"}
    peft = oom_remedies(make_session(backend="peft", gradient_checkpointing=False))[0]
    assert peft["changes"] == {"training.gradient_checkpointing": True}


def test_odd_batch_says_the_effective_batch_changed():
    halve = next(r for r in oom_remedies(make_session(per_device_train_batch_size=5)) if r["id"] == "halve_batch")
    assert "effective batch 16, was 20" in halve["label"]


def test_cheapest_oom_remedy_runs_out_instead_of_looping():
    session = make_session(gradient_checkpointing=False, per_device_train_batch_size=4)
    applied = []
    for _ in range(20):
        remedy = cheapest_oom_remedy(session)
        if remedy is None:
            break
        before = estimate_peak_gb(session)
        applied.append(remedy["id"])
        if before is not None and remedy["estimate_gb"] is not None and len(oom_remedies(session)) > 1:
            # with the planner's numbers, a retry is never spent on a change that saves nothing
            assert remedy["estimate_gb"] < before
        session = apply_remedy(session, remedy)
    else:
        pytest.fail("the cheapest remedy never ran out")
    assert applied[0] == "gradient_checkpointing"  # the cheapest, and it is not already on
    assert set(applied) == {"gradient_checkpointing", "halve_batch", "qlora", "shorter_sequences"}
    assert session.training.per_device_train_batch_size == 1 and session.effective_batch_size == 16
    assert session.method == "qlora" and session.model.max_seq_length == 128


def test_oom_remedies_carry_the_planners_estimate_for_the_demo_model():
    pytest.importorskip("engine.planner.memory")
    session = make_session(gradient_checkpointing=False, per_device_train_batch_size=8)
    current = estimate_peak_gb(session)
    assert current is not None and current > 0
    remedies = oom_remedies(session)
    assert all(isinstance(r["estimate_gb"], float) and r["estimate_gb"] < current for r in remedies)
    assert all(f"estimated peak {r['estimate_gb']:.1f} GiB" in r["label"] for r in remedies)
