"""The benchmarks' arithmetic: steady-state throughput read from a run's events, and the session
they train. (The benchmarks themselves train for minutes; `make bench` runs them.)"""

from __future__ import annotations

import pytest

from benchmarks.replay_runs import log_points, make_session, steady_throughput


def _log(step, time, tokens):
    return {"event": "log", "step": step, "time": time, "tokens_seen": tokens, "loss": 1.0}


def test_steady_state_leaves_out_the_steps_before_skip():
    events = [{"event": "start", "time": 0.0}, _log(1, 100.0, 500), _log(2, 101.0, 1000), _log(3, 102.0, 1500),
              _log(4, 104.0, 2500), {"event": "end", "time": 110.0}]
    speed = steady_throughput(log_points(events), skip=2)
    assert (speed.steps, speed.tokens, speed.seconds) == (2, 1500, 3.0)
    assert speed.tokens_per_second == pytest.approx(500.0)


def test_steady_state_needs_logs_past_skip():
    with pytest.raises(ValueError, match="past step 5"):
        steady_throughput(log_points([_log(1, 1.0, 10), _log(2, 2.0, 20)]), skip=5)


def test_benchmark_session_logs_every_step_and_saves_only_at_the_end(tmp_path):
    session = make_session(tmp_path / "run", steps=12, batch_size=2, max_seq_length=128)
    t = session.training
    assert (t.max_steps, t.logging_steps, t.save_steps, t.gradient_accumulation_steps) == (12, 1, 12, 1)
    assert session.dataset.eval_fraction == 0.0 and session.backend == "unsloth"
