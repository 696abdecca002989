"""The session's training block as TRL's SFTConfig (engine/training_args.py), checked by building a
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
    assert config.save_steps == config.eval_steps == 0.2
    assert config.save_total_limit == 3 and not config.load_best_model_at_end


def test_steps_the_person_chose_are_kept(tmp_path):
    config = _config(tmp_path, True, dataset__eval_fraction=0.1, training__eval_steps=5, training__save_steps=10)
    assert (config.eval_steps, config.save_steps) == (5, 10)


def test_without_an_eval_split_nothing_is_tracked(tmp_path):
    config = _config(tmp_path, False)
    assert config.eval_strategy == "no" and config.metric_for_best_model is None
    assert config.save_steps == 0.25  # a checkpoint every quarter of the run
    assert config.use_cpu and not config.bf16 and config.optim == "adamw_torch"
