"""Evaluation: the scores on fixed strings, and `lora-tui eval` on a real finished run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.evaluation.score import exact_match, field_scores, find_json, leaves, score_answer, summarize

REFERENCE = '{"name": "Ana Ruiz", "email": null, "phone": "555-0101", "company": "Acme", "city": "Lima"}'


def test_exact_match_ignores_surrounding_whitespace_only():
    assert exact_match("  Paris\n", "Paris")
    assert not exact_match("paris", "Paris")
    assert not exact_match('{"a": 1}', '{"a":1}')  # exact is exact: the JSON scores judge the content


def test_json_answer_exact():
    scores = score_answer(REFERENCE + "\n", REFERENCE)
    assert scores == {"exact": True, "valid_json": True, "fields_right": 5, "fields_total": 5, "wrong_fields": []}


def test_json_answer_with_one_wrong_and_one_missing_field():
    answer = '{"name": "Ana Ruiz", "email": null, "phone": "555 0101", "company": "Acme"}'
    scores = score_answer(answer, REFERENCE)
    assert not scores["exact"] and scores["valid_json"]
    assert (scores["fields_right"], scores["fields_total"]) == (3, 5)
    assert scores["wrong_fields"] == ["phone", "city"]


def test_json_in_prose_is_not_valid_but_its_fields_count():
    answer = 'Sure! Here is the contact:\n```json\n{"name": "Ana Ruiz", "city": "Lima"}\n```\nAnything else?'
    scores = score_answer(answer, REFERENCE)
    assert scores["valid_json"] is False
    assert scores["fields_right"] == 2
    # no fence: the first JSON object in the text
    assert find_json('The record is {"a": [1, 2]} as asked.') == (True, {"a": [1, 2]})
    assert find_json("no json here {oops") == (False, None)


def test_answer_that_never_closes_scores_zero_fields():
    answer = '{"name": "Ana Ruiz", "company_company_name": null, "company_company_name": null, "company_'
    scores = score_answer(answer, REFERENCE)
    assert scores["valid_json"] is False and scores["fields_right"] == 0 and not scores["exact"]


def test_nested_fields_and_value_types():
    assert leaves({"a": {"b": 1, "c": [True, None]}, "d": {}}) == {"a.b": 1, "a.c.0": True, "a.c.1": None, "d": {}}
    assert field_scores({"a": {"b": 1.0, "c": [1, None]}}, {"a": {"b": 1, "c": [True, None]}})[:2] == (2, 3)


def test_text_reference_gets_chrf():
    close = score_answer("The capital of France is Paris.", "Paris is the capital of France.")
    far = score_answer("I like turtles.", "Paris is the capital of France.")
    same = score_answer("Paris is the capital of France.", "Paris is the capital of France.")
    assert "valid_json" not in close
    assert same["chrf"] == 100.0 and same["exact"]
    assert 30 < close["chrf"] < 100 and far["chrf"] < 15
    assert score_answer("42", "42")["exact"]  # a bare JSON number is text, not a record
    assert "chrf" in score_answer("42", "42")


def test_summarize_rates():
    rows = [score_answer(REFERENCE, REFERENCE), score_answer('{"name": "Ana Ruiz"}', REFERENCE),
            score_answer("no idea", REFERENCE), score_answer("Lima", "Lima, Peru")]
    summary = summarize(rows)
    assert summary["rows"] == 4 and summary["exact"] == 1 and summary["exact_match"] == 0.25
    assert summary["json_rows"] == 3 and summary["valid_json"] == pytest.approx(2 / 3, abs=1e-4)
    assert summary["field_accuracy"] == pytest.approx(6 / 15, abs=1e-4)
    assert summary["text_rows"] == 1 and 0 < summary["chrf"] < 100
    assert summarize([])["exact_match"] is None


# -- on a real run --------------------------------------------------------------------------------------

@pytest.mark.training
def test_eval_command_on_a_finished_run(finished_run, tmp_path):
    """`lora-tui eval RUN_DIR --data FILE`: base and tuned answers scored, a file and an event written,
    and the finish screen's headline from them."""
    from conftest import copy_run, events_of, run_cli

    from engine.evaluation.report import headline

    run_dir = copy_run(finished_run, tmp_path / "run")
    data = Path(__file__).resolve().parent.parent / "data" / "demo" / "contacts_heldout.jsonl"
    result = run_cli("eval", str(run_dir), "--data", str(data), "--limit", "2", "--max-new-tokens", "32", "--json",
                     timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 2 and summary["split"] == "file" and summary["max_new_tokens"] == 32
    for side in ("base", "tuned"):
        assert summary[side]["rows"] == 2 and summary[side]["json_rows"] == 2
        assert 0 <= summary[side]["field_accuracy"] <= 1
    saved = json.loads((run_dir / "evaluation-contacts_heldout.json").read_text())
    assert len(saved["answers"]) == 2
    first = saved["answers"][0]
    assert first["reference"].startswith('{"name": "Beatriz Moreno"')
    assert "### Input:" in first["prompt_text"] or "<|im_start|>" in first["prompt_text"]  # asked as trained
    events = [e for e in events_of(run_dir) if e["event"] == "evaluation"]
    assert len(events) == 1 and events[0]["tuned"] == summary["tuned"]
    assert "exact match" in headline(summary)

    # The run trained with no eval split: said in one line, exit 2.
    result = run_cli("eval", str(run_dir))
    assert result.returncode == 2
    assert "no eval split" in result.stderr


# -- the troubleshooting rule -----------------------------------------------------------------------------

def _evaluation(base_exact: float, tuned_exact: float) -> dict:
    side = lambda rate: {"rows": 20, "exact_match": rate, "exact": int(rate * 20), "json_rows": 20,  # noqa: E731
                         "valid_json": 1.0, "field_accuracy": 0.9, "text_rows": 0, "chrf": None}
    return {"event": "evaluation", "split": "eval", "rows": 20, "base": side(base_exact), "tuned": side(tuned_exact),
            "has_chat_template": True}


def _diagnostician(losses):
    from engine.session.schema import session_from_dict
    from engine.troubleshooting.diagnostics import Diagnostician

    session = session_from_dict({"dataset": {"path": "d.jsonl", "template": "alpaca"}, "training": {"num_train_epochs": 1}})
    diagnostician = Diagnostician(session)
    for step, loss in enumerate(losses, start=1):
        diagnostician.observe({"event": "log", "step": step, "loss": loss, "learning_rate": 2e-4})
    return diagnostician


def test_loss_fell_but_exact_match_did_not_rise():
    diagnostician = _diagnostician([0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.15, 0.15])
    (finding,) = diagnostician.observe(_evaluation(0.0, 0.05))
    assert finding["kind"] == "no_task_gain"
    assert "Loss fell from 0.700 to 0.167, but exact match did not rise" in finding["message"]
    ids = [r["id"] for r in finding["remedies"]]
    assert ids[0] == "train_longer" and "use_chat_template" in ids
    assert finding["remedies"][0]["changes"] == {"training.num_train_epochs": 2.0}
    assert diagnostician.observe(_evaluation(0.0, 0.05)) == []  # the same news once


def test_partial_gain_and_success():
    (finding,) = _diagnostician([0.8, 0.6, 0.4, 0.2]).observe(_evaluation(0.0, 0.3))
    assert "learning the task but is not there yet" in finding["message"]
    assert _diagnostician([0.8, 0.6, 0.4, 0.2]).observe(_evaluation(0.0, 0.9)) == []
    held_out_file = _evaluation(0.0, 0.0) | {"split": "file"}
    assert _diagnostician([0.8, 0.6]).observe(held_out_file) == []  # the rule reads the run's own eval split


# -- the finish screen ------------------------------------------------------------------------------------

def test_finish_screen_shows_the_evaluation_side_by_side(tmp_path):
    """A run folder with an evaluation event: scores base vs fine-tuned and the examples, on screen."""
    import asyncio

    from conftest import ROOT, copy_run
    from textual.app import App
    from textual.widgets import Static

    from tui.screens.finish import FinishScreen

    run_dir = copy_run(ROOT / "tests" / "fixtures" / "events" / "finished", tmp_path / "run")
    event = _evaluation(0.0, 0.95) | {"where": "the eval split of extract_contacts.jsonl (20 rows held out from training)",
                                      "examples": [{"row": 3, "question": "q", "reference": REFERENCE, "base": "Sure! Ana.",
                                                    "tuned": REFERENCE, "base_exact": False, "tuned_exact": True}]}
    event["base"]["exact"], event["tuned"]["exact"] = 0, 19
    with open(run_dir / "events.jsonl", "a") as handle:
        handle.write(json.dumps(event) + "\n")

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(FinishScreen(run_dir))

    async def check():
        app = Host()
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            assert app.screen.query_one("#eval-examples", Static).display
            shown = app.export_screenshot().replace("&#160;", " ")
            for words in ("Does it do the task?", "exact match", "0/20 0%", "19/20 95%", "valid JSON",
                          "field accuracy", "Sure! Ana. ✗", "✓"):
                assert words in shown, words

    asyncio.run(check())


@pytest.mark.training
def test_the_worker_hook_records_a_failed_evaluation_without_failing_the_run(finished_run, tmp_path):
    """TrainingRun._evaluate runs the evaluation in a fresh process; whatever it answers (here: the run
    has no eval split) becomes the evaluation event, one line, and nothing raises."""
    from conftest import copy_run, events_of

    from engine.runs.events import EventWriter
    from engine.training.run import TrainingRun

    class NoStop:
        requested = False

    run_dir = copy_run(finished_run, tmp_path / "run")
    events = EventWriter(run_dir)
    try:
        TrainingRun(run_dir, backend=None, events=events, stop=NoStop())._evaluate()
    finally:
        events.close()
    (event,) = [e for e in events_of(run_dir) if e["event"] == "evaluation"]
    assert "no eval split" in event["error"]
    assert [e["state"] for e in events_of(run_dir) if e["event"] == "status"][-1] == "evaluating"


@pytest.mark.parametrize("template", ["chat", "alpaca"])
def test_eval_rows_are_the_held_out_rows_asked_as_training_asked(template):
    """The evaluation's prompts are, token for token, the start of the eval split training held out,
    and its references the trained text."""
    from conftest import DEMO_DATA, DEMO_MODEL

    from engine.data import prepare_dataset
    from engine.evaluation.evaluate import eval_rows
    from engine.models import load_tokenizer
    from engine.session.schema import session_from_dict

    session = session_from_dict({"dataset": {"path": str(DEMO_DATA), "template": template, "eval_fraction": 0.05}})
    tokenizer = load_tokenizer(DEMO_MODEL)
    held_out = prepare_dataset(session.dataset, tokenizer, session.model.max_seq_length, seed=session.training.seed).eval
    rows, where = eval_rows(session, tokenizer, limit=50, dropped_rows=0)
    assert len(rows) == len(held_out) == 20 and "eval split" in where
    for row, trained in zip(rows, held_out):
        prompt = tokenizer(row.prompt_text, add_special_tokens=False)["input_ids"]
        assert trained["input_ids"][: len(prompt)] == prompt
        assert set(trained["completion_mask"][: len(prompt)]) == {0} and trained["completion_mask"][len(prompt)] == 1
        answer = tokenizer.decode(trained["input_ids"][len(prompt):], skip_special_tokens=True).strip()
        assert answer == row.reference
    assert eval_rows(session, tokenizer, limit=5, dropped_rows=None)[0] == rows[:5]  # re-checking the drops: same rows
