"""Scoring a generated answer against its reference: pure functions, no model.

- exact match: the answer equals the reference once surrounding whitespace is stripped;
- JSON references (an object or a list): whether the answer is valid JSON as a whole, and per-field
  accuracy: each leaf of the reference (`{"a": {"b": 1}}` has the field `a.b`) compared with the
  same path in the answer's JSON. An answer that wraps its JSON in prose or a ``` fence is not valid
  JSON, but its fields are still read from the first JSON value found in it, so a model that gets
  the values right and the format wrong is told apart from one that gets both wrong;
- any other reference: chrF (character n-gram F-score, sacrebleu's implementation; 0-100), a
  token-overlap score that gives partial credit for a near answer and needs no tokenizer.

`summarize` turns a list of per-row scores into rates.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def exact_match(prediction: str, reference: str) -> bool:
    return prediction.strip() == reference.strip()


def json_reference(reference: str) -> Optional[Any]:
    """The reference's JSON value when it is an object or a list, else None (plain text, or a bare
    number or string, which are scored as text)."""
    try:
        value = json.loads(reference)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, (dict, list)) else None


def strict_json(text: str) -> tuple[bool, Any]:
    """(True, value) when the whole answer is one JSON value."""
    try:
        return True, json.loads(text.strip())
    except (ValueError, TypeError):
        return False, None


def find_json(text: str) -> tuple[bool, Any]:
    """(True, value) for the first JSON object or list in the answer: the whole of it, a fenced
    block, or the first `{` / `[` from which a JSON value decodes."""
    ok, value = strict_json(text)
    if ok:
        return True, value
    for block in _FENCE.findall(text):
        ok, value = strict_json(block)
        if ok:
            return True, value
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[{\[]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        return True, value
    return False, None


def leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted path -> value for every leaf of a JSON value (a list index is a path part; an empty
    object or list is a leaf of its own)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(leaves(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for index, item in enumerate(value):
            out.update(leaves(item, f"{prefix}.{index}" if prefix else str(index)))
        return out
    return {prefix: value}


def _same(a: Any, b: Any) -> bool:
    # 1 and 1.0 are the same value; True and 1 are not.
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def field_scores(prediction_value: Any, reference_value: Any) -> tuple[int, int, list[str]]:
    """(fields right, fields in the reference, the wrong fields' paths)."""
    expected = leaves(reference_value)
    got = leaves(prediction_value) if prediction_value is not None else {}
    wrong = [path for path, value in expected.items() if path not in got or not _same(got[path], value)]
    return len(expected) - len(wrong), len(expected), wrong


def chrf(prediction: str, reference: str) -> float:
    """sacrebleu's sentence-level chrF (0-100)."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().sentence_score(prediction.strip(), [reference.strip()]).score)


def score_answer(prediction: str, reference: str) -> dict[str, Any]:
    """One row's scores: {"exact": bool} plus {"valid_json", "fields_right", "fields_total",
    "wrong_fields"} for a JSON reference, or {"chrf"} for any other."""
    scores: dict[str, Any] = {"exact": exact_match(prediction, reference)}
    expected = json_reference(reference)
    if expected is not None:
        valid, _ = strict_json(prediction)
        found, value = find_json(prediction)
        right, total, wrong = field_scores(value if found else None, expected)
        scores.update(valid_json=valid, fields_right=right, fields_total=total, wrong_fields=wrong)
    else:
        scores["chrf"] = round(chrf(prediction, reference), 2)
    return scores


def summarize(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates over rows: exact_match (0-1) for all; valid_json and field_accuracy (0-1) over the rows
    with JSON references; chrf (mean, 0-100) over the others. A rate with no rows is None."""
    n = len(scores)
    json_rows = [s for s in scores if "valid_json" in s]
    text_rows = [s for s in scores if "chrf" in s]
    fields_total = sum(s["fields_total"] for s in json_rows)
    return {
        "rows": n,
        "exact_match": _rate(sum(1 for s in scores if s["exact"]), n),
        "exact": sum(1 for s in scores if s["exact"]),
        "json_rows": len(json_rows),
        "valid_json": _rate(sum(1 for s in json_rows if s["valid_json"]), len(json_rows)),
        "field_accuracy": _rate(sum(s["fields_right"] for s in json_rows), fields_total),
        "text_rows": len(text_rows),
        "chrf": round(sum(s["chrf"] for s in text_rows) / len(text_rows), 2) if text_rows else None,
    }


def _rate(count: int, total: int) -> Optional[float]:
    return round(count / total, 4) if total else None
