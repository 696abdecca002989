"""The session's training block as TRL's SFTConfig (engine/training/args.py), checked by building a
real SFTConfig: TRL and transformers validate the combination themselves."""

from __future__ import annotations

from trl import SFTConfig

from engine.session.schema import session_from_dict
from engine.training.args import sft_config_kwargs
from tests.conftest import small_session


def _config(tmp_path, has_eval: bool, **overrides) -> SFTConfig:
    session = session_from_dict(small_session(tmp_path, **overrides))
    kwargs = sft_config_kwargs(session, tmp_path / "run", has_eval=has_eval, on_gpu=False, bf16_ok=False)
    return SFTConfig(**kwargs)


def test_with_an_eval_split_the_best_checkpoint_survives_rotation(tmp_path):
    config = _config(tmp_path, True, dataset__eval_fraction=0.1, training__max_steps=40)
    # The Trainer protects best_model_checkpoint from save_total_limit only while it tracks a metric,
    # and the best evaluation has a checkpoint only when saves fall on evaluations.
    assert (config.metric_for_best_model, config.greater_is_better) == ("eval_loss", False)
    assert (config.eval_steps, config.save_steps) == (4, 8)  # auto on 40 steps: 10 evaluations, saves on every other
    assert config.save_steps % config.eval_steps == 0
    assert config.save_total_limit == 3 and not config.load_best_model_at_end


def test_steps_the_person_chose_are_kept(tmp_path):
    config = _config(tmp_path, True, dataset__eval_fraction=0.1, training__eval_steps=5, training__save_steps=10)
    assert (config.eval_steps, config.save_steps) == (5, 10)


def test_without_an_eval_split_nothing_is_tracked(tmp_path):
    config = _config(tmp_path, False, training__max_steps=40)
    assert config.eval_strategy == "no" and config.metric_for_best_model is None
    assert config.save_steps == 10  # auto: a checkpoint every quarter of the run
    assert config.use_cpu and not config.bf16 and config.optim == "adamw_torch"


def test_auto_gives_about_100_points_10_evaluations_and_4_checkpoints_whatever_the_length():
    from engine.training.args import auto_steps

    assert auto_steps(24, has_eval=True) == {"logging_steps": 1, "eval_steps": 2, "save_steps": 4}
    assert auto_steps(3, has_eval=False) == {"logging_steps": 1, "eval_steps": 1, "save_steps": 1}
    long = auto_steps(10_000, has_eval=True)
    assert long["logging_steps"] == 100 and long["eval_steps"] == 1000
    assert 10_000 // long["save_steps"] in (4, 5) and long["save_steps"] % long["eval_steps"] == 0
    assert auto_steps(10_000, has_eval=False)["save_steps"] == 2500


def test_total_steps_are_counted_as_the_trainer_counts_them():
    from engine.training.args import total_optimizer_steps

    # The demo: 380 train rows, batch 4 x accumulation 4, one epoch: 95 batches -> 24 optimizer steps.
    assert total_optimizer_steps(380, 4, 4, 1) == 24
    assert total_optimizer_steps(380, 4, 4, 3) == 72
    assert total_optimizer_steps(380, 4, 4, 1, max_steps=10) == 10
    assert total_optimizer_steps(380, 4, 4, 1, world_size=2) == 12


def test_auto_is_the_default_and_null_means_auto(tmp_path):
    from engine.training.args import resolved_steps

    session = session_from_dict(small_session(tmp_path))
    fresh = session_from_dict({"dataset": {"path": "d.jsonl"}})
    assert (fresh.training.logging_steps, fresh.training.eval_steps, fresh.training.save_steps) == ("auto",) * 3
    old = session.with_changes({"training.eval_steps": None, "training.save_steps": None, "training.logging_steps": 5})
    assert resolved_steps(old.training, 200, has_eval=True) == {"logging_steps": 5, "eval_steps": 20, "save_steps": 40}
