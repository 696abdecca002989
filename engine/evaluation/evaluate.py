"""Does the tuned model do the task? Base against tuned on the eval split (or any file), scored.

`lora-tui eval RUN_DIR [--data FILE] [--limit N] [--json]` and the end of every run with an eval
split (the worker starts `python -m engine.evaluation.evaluate RUN_DIR --json --quiet` in a fresh
process once the adapter is saved): up to N rows, each asked exactly as training asked it (the
session's template through `engine.data`'s renderer, as `generate.render_prompt` does for try-it),
answered greedily by the base model and by the tuned one, and scored against the row's reference
(`score.py`: exact match; valid JSON and per-field accuracy for JSON references; chrF otherwise).

The whole result goes to `RUN_DIR/evaluation.json` (`evaluation-<file>.json` for `--data FILE`);
its summary and a few examples side by side are the `evaluation` event of `events.jsonl`, which
the finish screen shows and the troubleshooting rules read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from engine.errors import UserError
from engine.evaluation.score import score_answer, summarize

DEFAULT_LIMIT = 50
EVALUATION_FILE = "evaluation.json"
EXAMPLES_IN_EVENT = 3
# New tokens allowed: the longest reference's length with room to spare, so a model that does not
# stop is cut, and one that rambles costs little.
MAX_NEW_TOKENS_CAP = 1024


@dataclass
class EvalRow:
    row: int  # the row of the file (0-based)
    prompt_text: str  # exactly what the model sees before its answer
    reference: str
    shown: str  # the question in a few words, for a person: instruction, input or last user turn


# -- which rows, asked how --------------------------------------------------------------------------

def _records(session, path: str, given_file: bool):
    """The file's rows as engine.data records, mapped as the session maps its dataset (a given file
    whose columns differ is detected afresh)."""
    from engine.data.detect import resolve_mapping
    from engine.data.load import load_table
    from engine.data.rows import build_records
    from engine.errors import DataError

    d = session.dataset
    table = load_table(path)
    try:
        fmt, mapping, _ = resolve_mapping(table, d.format, d.columns)
    except DataError:
        if not given_file:
            raise
        fmt, mapping, _ = resolve_mapping(table, "auto", None)
    return build_records(table, fmt, mapping, skip_invalid_rows=given_file or d.skip_invalid_rows)


def _prompt_and_reference(renderer, tokenizer, fmt: str, template: str, item) -> Optional[tuple[str, str, str]]:
    """(prompt text, reference, shown) for one record; None when it has nothing to answer."""
    from engine.data.rows import Conversation
    from engine.evaluation.generate import render_prompt

    if isinstance(item, Conversation):
        trained = [i for i in range(len(item.messages)) if item.is_trained(i)]
        if not trained:
            return None
        last = trained[-1]
        reference = item.messages[last].get("content")
        if not isinstance(reference, str) or not reference.strip():
            return None  # a tool call: no text to compare
        cut = Conversation(item.messages[: last + 1], tools=item.tools,
                           trained=[i == last for i in range(last + 1)])
        prompt = ""
        for text, is_trained in renderer.render(cut):
            if is_trained:
                break
            prompt += text
        users = [m.get("content") for m in item.messages[:last] if m.get("role") == "user"]
        return prompt, reference, str(users[-1]) if users else ""
    if fmt == "instruction":
        instruction, input_text, reference = item
        shown = input_text or instruction  # the part that differs from row to row
        return render_prompt(tokenizer, fmt, template, instruction, input_text), reference, shown
    if fmt == "prompt_completion":
        prompt, reference = item
        return render_prompt(tokenizer, fmt, template, prompt), reference, prompt
    return None  # plain text: no question and answer


def eval_rows(session, tokenizer, data_path: Optional[str] = None, limit: int = DEFAULT_LIMIT,
              dropped_rows: Optional[int] = None) -> tuple[list[EvalRow], str]:
    """Up to `limit` rows to ask, and where they came from in words.

    Without `data_path`: the run's eval split, the same rows training held out (engine.data's
    split, over the rows training kept; `dropped_rows` from the run's data report saves
    re-checking which rows max_seq_length dropped). With it: the first rows of that file."""
    from engine.data.prepare import _split_indices  # the one split rule, shared with training
    from engine.data.templates import Renderer

    d = session.dataset
    path = data_path or d.path
    records = _records(session, path, given_file=data_path is not None)
    if records.format == "text":
        raise UserError(f"{path}: plain text has no questions and reference answers to score; evaluate a file "
                        "of instructions and responses, prompts and completions, or conversations.")
    renderer = Renderer(tokenizer, records.format, d.template, completion_only_loss=True,
                        conversational=records.conversational)
    indices = list(range(len(records.items)))
    if data_path is None:
        if d.eval_fraction <= 0:
            raise UserError("This run has no eval split (dataset.eval_fraction is 0): give a file to score with --data FILE.")
        if dropped_rows != 0:
            indices = [i for i in indices if _kept(renderer, tokenizer, records.items[i], session.model.max_seq_length)]
        _, held_out = _split_indices(len(indices), d.eval_fraction, session.training.seed)
        indices = [indices[i] for i in held_out]
        where = f"the eval split of {Path(path).name} ({len(indices)} rows held out from training)"
    else:
        where = f"{Path(path).name} ({len(indices)} rows)"
    rows: list[EvalRow] = []
    for index in indices:
        asked = _prompt_and_reference(renderer, tokenizer, records.format, d.template, records.items[index])
        if asked is not None:
            rows.append(EvalRow(records.row_indices[index], *asked))
        if len(rows) >= limit:
            break
    if not rows:
        raise UserError(f"{path}: no row has a reference answer to score.")
    return rows, where


def _kept(renderer, tokenizer, item, max_seq_length: int) -> bool:
    """Training keeps a row when some of its trained tokens fit in max_seq_length."""
    before = 0
    for text, trained in renderer.render(item):
        if trained:
            return before < max_seq_length
        before += len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return False


# -- generating -------------------------------------------------------------------------------------

def max_new_tokens_for(tokenizer, references: list[str]) -> int:
    longest = max(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references)
    return min(MAX_NEW_TOKENS_CAP, max(16, int(longest * 1.25) + 16))


def generate_batch(generator, model, texts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy answers to prompts, left-padded in one batch."""
    import torch

    tokenizer = generator.tokenizer
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id)
    new = output[:, inputs["input_ids"].shape[1]:]
    return [text.strip() for text in tokenizer.batch_decode(new, skip_special_tokens=True)]


def _answers(generator, texts: list[str], max_new_tokens: int, batch_size: int) -> tuple[list[str], list[str]]:
    """(base answers, tuned answers), in the order of `texts`; prompts of like length batched together."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    base: dict[int, str] = {}
    tuned: dict[int, str] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = [texts[i] for i in chunk]
        if generator.base is None:  # an adapter: the base is the same model with the adapter off
            with generator.tuned.disable_adapter():
                base_out = generate_batch(generator, generator.tuned, batch, max_new_tokens)
        else:
            base_out = generate_batch(generator, generator.base, batch, max_new_tokens)
        tuned_out = generate_batch(generator, generator.tuned, batch, max_new_tokens)
        for i, b, t in zip(chunk, base_out, tuned_out):
            base[i], tuned[i] = b, t
    return [base[i] for i in range(len(texts))], [tuned[i] for i in range(len(texts))]


# -- the whole evaluation ---------------------------------------------------------------------------

def evaluation_path(run_dir: Path, data_path: Optional[str]) -> Path:
    return run_dir / (EVALUATION_FILE if data_path is None else f"evaluation-{Path(data_path).stem}.json")


def _pick_examples(answers: list[dict], count: int) -> list[dict]:
    """A few rows side by side: the first ones, and the first the tuned model gets wrong (if any)."""
    wrong = [a for a in answers if not a["tuned_scores"]["exact"]]
    picked = answers[: max(1, count - min(len(wrong), 2))]
    for answer in wrong:
        if len(picked) >= count:
            break
        if answer not in picked:
            picked.append(answer)
    return [{k: a[k] for k in ("row", "question", "reference", "base", "tuned")}
            | {"base_exact": a["base_scores"]["exact"], "tuned_exact": a["tuned_scores"]["exact"]} for a in picked]


def run_evaluation(run_dir: str | Path, data_path: Optional[str] = None, limit: int = DEFAULT_LIMIT,
                   batch_size: Optional[int] = None, max_new_tokens: Optional[int] = None) -> dict[str, Any]:
    """Generate, score, and write the result file; returns the result (the `evaluation` event carries it)."""
    from engine.evaluation.generate import Generator
    from engine.runs.events import read_events
    from engine.session.schema import load_session

    run_dir = Path(run_dir).resolve()
    started = time.monotonic()
    session = load_session(run_dir / "session.json")
    absolute = str(Path(data_path).expanduser().resolve()) if data_path else None
    if absolute and not Path(absolute).exists():
        raise UserError(f"{data_path}: no such file; give a JSON, JSONL, CSV or Parquet file to score.")
    if absolute is None and session.dataset.eval_fraction <= 0:
        raise UserError("This run has no eval split (dataset.eval_fraction is 0): give a file to score with --data FILE.")
    generator = Generator(run_dir)
    data_event = next((e for e in reversed(read_events(run_dir)) if e.get("event") == "data"), {})
    dropped = data_event.get("dropped_rows") if isinstance(data_event.get("dropped_rows"), int) else None
    rows, where = eval_rows(session, generator.tokenizer, absolute, limit, dropped)
    max_new = max_new_tokens or max_new_tokens_for(generator.tokenizer, [r.reference for r in rows])
    base, tuned = _answers(generator, [r.prompt_text for r in rows], max_new, batch_size or 16)
    answers = []
    for row, b, t in zip(rows, base, tuned):
        answers.append({"row": row.row, "question": row.shown, "prompt_text": row.prompt_text,
                        "reference": row.reference, "base": b, "tuned": t,
                        "base_scores": score_answer(b, row.reference), "tuned_scores": score_answer(t, row.reference)})
    result = {
        "split": "eval" if data_path is None else "file",
        "data": absolute or session.dataset.path,
        "where": where,
        "rows": len(rows),
        "limit": limit,
        "template": session.dataset.template,
        "has_chat_template": bool(getattr(generator.tokenizer, "chat_template", None)),
        "format": generator.format,
        "max_new_tokens": max_new,
        "decoding": "greedy",
        "base": summarize([a["base_scores"] for a in answers]),
        "tuned": summarize([a["tuned_scores"] for a in answers]),
        "seconds": round(time.monotonic() - started, 1),
        "examples": _pick_examples(answers, EXAMPLES_IN_EVENT),
    }
    path = evaluation_path(run_dir, data_path)
    from engine.paths import atomic_write_text

    atomic_write_text(path, json.dumps(result | {"answers": answers}, indent=2, ensure_ascii=False) + "\n")
    result["file"] = str(path)
    return result


def record_evaluation(run_dir: Path, result: dict[str, Any]) -> list[dict]:
    """Append the `evaluation` event to a finished run's events.jsonl, and what the troubleshooting
    rules make of it (they see the run's whole stream first). Returns the findings written."""
    from engine.runs.events import EventWriter, read_events
    from engine.session.schema import load_session
    from engine.troubleshooting.diagnostics import Diagnostician

    events = read_events(run_dir)
    diagnostician = Diagnostician(load_session(Path(run_dir) / "session.json"))
    for event in events:
        diagnostician.observe(event)
    writer = EventWriter(run_dir)
    try:
        event = writer.emit("evaluation", **result)
        findings = diagnostician.observe(event)
        for finding in findings:
            writer.emit("finding", **{k: v for k, v in finding.items() if k != "event"})
    finally:
        writer.close()
    return findings


# -- the command ------------------------------------------------------------------------------------

def eval_command(argv: list[str]) -> int:
    """`lora-tui eval RUN_DIR [--data FILE] [--limit N] [--json]`."""
    parser = argparse.ArgumentParser(
        prog="lora-tui eval",
        description="Score the base and the fine-tuned model of a finished run on its eval split, or on a file: "
                    "greedy answers against the references (exact match; valid JSON and per-field accuracy for JSON "
                    "answers; chrF otherwise).",
    )
    parser.add_argument("run_dir")
    parser.add_argument("--data", metavar="FILE", help="score this file's rows instead of the run's eval split")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"at most this many rows (default {DEFAULT_LIMIT})")
    parser.add_argument("--max-new-tokens", type=int, metavar="N",
                        help="cut each answer at N tokens (default: the longest reference's length and a quarter more)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no event in events.jsonl (the worker writes it)")
    args = parser.parse_args(argv)
    if args.limit <= 0:
        parser.error("--limit must be a positive number of rows")
    if args.max_new_tokens is not None and args.max_new_tokens <= 0:
        parser.error("--max-new-tokens must be a positive number")
    run_dir = Path(args.run_dir).expanduser()
    if not (run_dir / "session.json").is_file():
        raise UserError(f"{run_dir}: not a run folder (no session.json); give the folder a run wrote, such as runs/demo.")
    from engine.quiet import quiet_libraries

    quiet_libraries()
    out = sys.stdout
    if args.json:  # the JSON line owns stdout; library chatter goes to stderr
        import os

        out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
        sys.stdout = sys.stderr
    else:
        print(f"Evaluating {run_dir}: loading the base and the fine-tuned model ...", flush=True)
    try:
        result = run_evaluation(run_dir, args.data, args.limit, max_new_tokens=args.max_new_tokens)
        findings = [] if args.quiet else record_evaluation(run_dir, result)
    except Exception as exc:
        if not args.json:
            raise
        import traceback

        traceback.print_exc()  # to stderr: the worker keeps it in worker.log
        out.write(json.dumps({"error": _one_line(exc)}) + "\n")
        out.flush()
        return 2 if isinstance(exc, UserError) else 1
    if args.json:
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
        out.flush()
    else:
        from engine.evaluation.report import format_evaluation

        print(format_evaluation(result))
        for finding in findings:
            print(f"! {finding['message']}")
    return 0


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"Evaluation failed: {type(exc).__name__}: {first}"[:300]


def main(argv=None) -> int:
    try:
        return eval_command(list(sys.argv[1:] if argv is None else argv))
    except UserError as exc:
        print(str(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
