"""`lora-tui export RUN_DIR --gguf TYPE`: a GGUF for llama.cpp / Ollama / LM Studio, checked by a real generation.

The steps: the merged model (merged/, merged first when missing; model/ for full fine-tuning), its
tokenizer made readable by llama.cpp (engine.models.repair_byte_level_tokenizer), llama.cpp's pinned
converter (engine.export.llama_cpp) to f16 / bf16 / q8_0, llama.cpp's quantizer for q4_k_m /
q5_k_m, then **the check**: a few of the run's own questions, rendered exactly as training rendered
them, answered greedily by the merged model in transformers and by the GGUF in llama.cpp (its own
process: a bad GGUF can abort llama.cpp). Reported: whether llama.cpp tokenizes the prompts as
transformers does, the answers side by side and whether they match token for token, teacher-forced
top-1 agreement over prompt + answer (greedy text can part after one near tie in a quantized
model, so this is the measure for quantized types), file size, load time and tokens/s.

A GGUF that fails the check is renamed `<name>-<type>.failed.gguf` and the command exits 1; one
that passes is `RUN_DIR/gguf/<name>-<type>.gguf` with an Ollama `Modelfile` beside it. The check
is written to `RUN_DIR/gguf/<name>-<type>.check.json` and as a `gguf` event in events.jsonl.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional, get_args

from engine.errors import ModelError, UserError
from engine.export.gguf_summary import summary_lines
from engine.session.schema import GgufType

GGUF_TYPES: tuple[str, ...] = get_args(GgufType)
DEFAULT_TYPE = "q4_k_m"
GGUF_DIR = "gguf"
# Written by the converter itself; the k-quants are quantized from a 16-bit GGUF by llama.cpp.
CONVERTER_TYPES = {"f16", "bf16", "q8_0"}
SIXTEEN_BIT = {"f16", "bf16"}
# Teacher-forced top-1 agreement with the merged model a GGUF must reach: a bar for a broken file (a
# wrong tensor mapping or rope agrees on a fraction of positions), not for quantization's ordinary loss.
# Measured on the demo model: f16 100 %, bf16 98.9 % (llama.cpp computes in bf16 too), q8_0 about 97 %,
# q4_k_m and q5_k_m 87-89 % (its rows of 576 are not a multiple of 256, so llama.cpp falls back to
# q5_0 / q5_1 for 180 of 272 tensors).
MIN_TOP1 = {"f16": 0.98, "bf16": 0.97, "q8_0": 0.93, "q5_k_m": 0.8, "q4_k_m": 0.8}
# A 16-bit GGUF must answer token for token, except where the two parted on a near tie: the merged
# model's logit for the GGUF's token within this much of its own choice.
CLOSE_CALL_LOGITS = 1.0
CHECK_PROMPTS = 3
MAX_NEW_TOKENS = 80  # the demo's JSON answers are 40-70 tokens

Progress = Callable[[str], None]


def _say(progress: Optional[Progress], text: str) -> None:
    if progress:
        progress(text)


def check_type(gguf_type: str) -> str:
    value = str(gguf_type).strip().lower()
    if value not in GGUF_TYPES:
        raise UserError(f"--gguf {gguf_type}: not a GGUF type lora-tui writes; choose one of {', '.join(GGUF_TYPES)} "
                        f"(default {DEFAULT_TYPE}).")
    return value


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


def gguf_path(run_dir: Path, gguf_type: str, failed: bool = False) -> Path:
    name = _slug(Path(run_dir).resolve().name)
    return Path(run_dir) / GGUF_DIR / f"{name}-{gguf_type}{'.failed' if failed else ''}.gguf"


def _architecture(folder: Path) -> str:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        raise UserError(f"{folder}: no readable config.json; nothing to convert.") from None
    if not isinstance(config, dict):
        raise UserError(f"{folder / 'config.json'}: not a model config (a JSON object with \"architectures\"); nothing to convert.")
    architectures = config.get("architectures") or []
    return architectures[0] if architectures else str(config.get("model_type") or "unknown")


def check_architecture(folder: Path, script: Path) -> str:
    from engine.export.llama_cpp import LLAMA_CPP_PYTHON, supported_architectures

    arch = _architecture(folder)
    if arch not in supported_architectures(script):
        raise UserError(f"{arch}: llama.cpp's converter (llama-cpp-python {LLAMA_CPP_PYTHON}) does not know this "
                        f"model family, so it cannot be written as GGUF; {folder} still loads with transformers.")
    return arch


def model_folder(run_dir: Path, progress: Optional[Progress] = None) -> Path:
    """The whole model to convert: merged/ (merging the adapter first when missing), or a full run's model/."""
    from engine.export.merge import ADAPTER_DIR, MERGED_DIR, merge_adapter_report

    merged = run_dir / MERGED_DIR
    if (merged / "config.json").is_file():
        return merged
    if (run_dir / "model" / "config.json").is_file():
        return run_dir / "model"
    if not (run_dir / ADAPTER_DIR / "adapter_config.json").is_file():
        raise UserError(f"{run_dir}: no adapter/, merged/ or model/ here; export a finished run's folder.")
    _say(progress, "Merging the adapter into its base model (merged/) ...")
    return Path(merge_adapter_report(run_dir).path)


def _probe(args: list[str], log: Path) -> dict:
    """engine.export.llama_probe in its own process; a crash of llama.cpp becomes a sentence."""
    with open(log, "ab") as handle:
        result = subprocess.run([sys.executable, "-m", "engine.export.llama_probe", *args],
                                stdout=subprocess.PIPE, stderr=handle, text=True)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        code = result.returncode
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return {"error": f"llama.cpp {how} (see {log})", "crashed": True}


def convert(folder: Path, out: Path, outtype: str, script: Path, log: Path) -> None:
    from engine.export.llama_cpp import converter_env

    with open(log, "ab") as handle:
        handle.write(f"\n$ convert_hf_to_gguf.py {folder} --outtype {outtype}\n".encode())
        handle.flush()
        result = subprocess.run([sys.executable, str(script), str(folder), "--outfile", str(out), "--outtype", outtype],
                                stdout=handle, stderr=subprocess.STDOUT, env=converter_env(script))
    if result.returncode != 0 or not out.is_file():
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:] or ["no output"]
        raise ModelError(f"llama.cpp's converter failed on {folder}: {tail[0].strip()[:300]} (see {log}).")


# -- the check ----------------------------------------------------------------------------------------

def _stop_ids(folder: Path, tokenizer) -> list[int]:
    """The tokens that end an answer: the generation config's EOS (one or several) and the tokenizer's."""
    ids: set[int] = set()
    try:
        eos = json.loads((folder / "generation_config.json").read_text()).get("eos_token_id")
        ids.update(eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else [])
    except (OSError, ValueError):
        pass
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


def check_prompts(run_dir: Path, session, tokenizer, count: int = CHECK_PROMPTS) -> list[tuple[str, str]]:
    """(shown, prompt text) for a few of the run's own questions, rendered exactly as training rendered them:
    the eval split, else the first rows of the training file."""
    from engine.evaluation.evaluate import eval_rows

    for data_path in (None, session.dataset.path):
        try:
            rows, _ = eval_rows(session, tokenizer, data_path=data_path, limit=count)
            return [(row.shown or row.prompt_text[-80:], row.prompt_text) for row in rows]
        except UserError:
            continue
    # Plain text: no questions; the model continues the start of a few sentences.
    from engine.evaluation.generate import _data_format, render_prompt

    fmt = _data_format(run_dir, session)
    starts = ["The capital of France is", "Here is a short list of fruits:", "Once upon a time"]
    return [(s, render_prompt(tokenizer, fmt, session.dataset.template, s)) for s in starts[:count]]


def _reference(folder: Path, prompts: list[str], stop_ids: list[int], trust: bool):
    """The merged model's greedy answers in transformers, and its logits over prompt + answer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust)
    on_gpu = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=torch.bfloat16 if on_gpu else torch.float32, trust_remote_code=trust,
        device_map={"": torch.cuda.current_device()} if on_gpu else None)
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    out = []
    for text in prompts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        inputs = torch.tensor([ids], device=model.device)
        with torch.no_grad():
            generated = model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=MAX_NEW_TOKENS,
                                       do_sample=False, temperature=None, top_p=None, top_k=None,
                                       eos_token_id=stop_ids, pad_token_id=pad)
        answer = [int(t) for t in generated[0, len(ids):]]
        while answer and answer[-1] in stop_ids:  # the stop token itself and any padding after it
            answer.pop()
        reference = ids + answer
        with torch.no_grad():
            logits = model(torch.tensor([reference], device=model.device)).logits[0].float().cpu()
        out.append({"ids": ids, "answer": answer, "reference": reference, "logits": logits,
                    "text": tokenizer.decode(answer, skip_special_tokens=True)})
    del model
    return tokenizer, out


def _compare(gguf_type: str, shown: list[str], reference: list[dict], probe: dict) -> dict:
    agree = positions = 0
    prompts, identical, parted_on_close_call = [], 0, 0
    tokenization_match = True
    for index, ref in enumerate(reference):
        top1 = probe["top1"][index]
        ours = ref["logits"].argmax(-1).tolist()
        agree += sum(int(a == b) for a, b in zip(ours, top1))
        positions += len(ours)
        same_tokens = probe["tokenized"][index] == ref["ids"]
        tokenization_match &= same_tokens
        theirs = probe["answers"][index]
        parted = next((i for i, (a, b) in enumerate(zip(ref["answer"], theirs)) if a != b), None)
        if parted is None and len(ref["answer"]) != len(theirs):
            parted = min(len(ref["answer"]), len(theirs))
        close = None
        if parted is not None and parted < len(theirs) and parted < len(ref["answer"]):
            row = ref["logits"][len(ref["ids"]) + parted - 1]  # the merged model's view where they parted
            close = float(row[ref["answer"][parted]] - row[theirs[parted]]) <= CLOSE_CALL_LOGITS
        identical += parted is None
        parted_on_close_call += bool(close)
        prompts.append({"shown": shown[index], "merged": ref["text"], "gguf": probe["answer_texts"][index],
                        "identical": parted is None, "parted_at_token": parted, "close_call": close,
                        "tokenization_match": same_tokens, "answer_tokens": len(ref["answer"])})
    top1_agreement = agree / positions if positions else 0.0
    reasons = []
    if not tokenization_match:
        reasons.append("llama.cpp tokenizes the prompts differently from transformers (a tokenizer mismatch: "
                       "answers from this file would be garbage)")
    if top1_agreement < MIN_TOP1[gguf_type]:
        reasons.append(f"the next-token agreement with the merged model is {top1_agreement:.1%}, under the "
                       f"{MIN_TOP1[gguf_type]:.0%} a {gguf_type} file should reach")
    if gguf_type in SIXTEEN_BIT and identical + parted_on_close_call < len(reference):
        reasons.append("a 16-bit file answered differently from the merged model without a near tie to explain it")
    return {"passed": not reasons, "reason": "; ".join(reasons), "top1_agreement": round(top1_agreement, 4),
            "positions": positions, "answers_identical": identical, "answers": len(reference),
            "parted_on_close_call": parted_on_close_call, "tokenization_match": tokenization_match, "prompts": prompts}


def run_check(run_dir: Path, folder: Path, gguf: Path, gguf_type: str, session, log: Path,
              progress: Optional[Progress] = None, prompts: int = CHECK_PROMPTS) -> dict:
    from transformers import AutoTokenizer

    trust = session.model.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust)
    asked = check_prompts(run_dir, session, tokenizer, prompts)
    shown, texts = [s for s, _ in asked], [t for _, t in asked]
    stop_ids = _stop_ids(folder, tokenizer)
    _say(progress, f"Checking: {len(texts)} of the run's prompts, greedy, in transformers (merged model) ...")
    _, reference = _reference(folder, texts, stop_ids, trust)
    _say(progress, "Checking: the same prompts in llama.cpp (the GGUF) ...")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, dir=gguf.parent) as handle:
        json.dump({"gguf": str(gguf), "prompts": texts, "references": [r["reference"] for r in reference],
                   "stop_ids": stop_ids, "max_new_tokens": MAX_NEW_TOKENS}, handle)
    try:
        probe = _probe(["check", handle.name], log)
    finally:
        Path(handle.name).unlink(missing_ok=True)
    if "error" in probe:
        return {"passed": False, "reason": f"llama.cpp could not load or run the file: {probe['error']}",
                "prompts": [{"shown": s, "merged": r["text"], "gguf": None} for s, r in zip(shown, reference)],
                "stop_tokens": [tokenizer.convert_ids_to_tokens(i) for i in stop_ids]}
    result = _compare(gguf_type, shown, reference, probe)
    result.update(tokens_per_second=probe.get("tokens_per_second"), load_seconds=probe.get("load_seconds"),
                  threads=probe.get("threads"), metadata=probe.get("metadata"),
                  stop_tokens=[tokenizer.convert_ids_to_tokens(i) for i in stop_ids])
    return result


# -- the whole export ---------------------------------------------------------------------------------

def export_gguf(run_dir: str | Path, gguf_type: str = DEFAULT_TYPE, progress: Optional[Progress] = None,
                check_prompts: int = CHECK_PROMPTS) -> dict:
    """Write and check RUN_DIR/gguf/<name>-<type>.gguf; the report (also written beside it as .check.json)."""
    from engine.export import llama_cpp
    from engine.models import repair_byte_level_tokenizer
    from engine.session.schema import load_session

    gguf_type = check_type(gguf_type)
    run_dir = Path(run_dir).expanduser().resolve()
    if not (run_dir / "session.json").is_file():
        raise UserError(f"{run_dir}: not a run folder (no session.json); give the folder a run wrote.")
    session = load_session(run_dir / "session.json")
    started = time.monotonic()
    script = llama_cpp.converter(progress)
    # Before any slow step: a family the converter does not know ends here (merged/ or the base's config).
    from engine.export.merge import MERGED_DIR, base_model_path

    probe_folder = next((f for f in (run_dir / MERGED_DIR, run_dir / "model") if (f / "config.json").is_file()), None)
    check_architecture(probe_folder or Path(base_model_path(run_dir)), script)
    llama_cpp.install_bindings(progress)
    folder = model_folder(run_dir, progress)
    arch = check_architecture(folder, script)
    if repair_byte_level_tokenizer(folder):
        _say(progress, "Repaired the saved tokenizer's metadata (a byte-level BPE marked as SentencePiece-like).")

    out_dir = run_dir / GGUF_DIR
    out_dir.mkdir(exist_ok=True)
    log = out_dir / "export.log"
    final, failed = gguf_path(run_dir, gguf_type), gguf_path(run_dir, gguf_type, failed=True)
    partial = final.with_name(f".{final.stem}.partial.gguf")
    first = gguf_type if gguf_type in CONVERTER_TYPES else ("bf16" if _dtype(folder) == "bfloat16" else "f16")
    _say(progress, f"Converting {folder.name}/ ({arch}) to GGUF {first} with llama.cpp's converter ...")
    intermediate = partial if first == gguf_type else out_dir / f".{final.stem}.{first}.partial.gguf"
    try:
        convert(folder, intermediate, first, script, log)
        if intermediate != partial:
            _say(progress, f"Quantizing to {gguf_type} with llama.cpp ...")
            reply = _probe(["quantize", str(intermediate), str(partial), gguf_type], log)
            if "error" in reply:
                raise ModelError(f"quantizing to {gguf_type} failed: {reply['error']}")
    finally:
        if intermediate != partial:
            intermediate.unlink(missing_ok=True)
    written = time.monotonic() - started

    check = run_check(run_dir, folder, partial, gguf_type, session, log, progress, max(1, check_prompts))
    final.unlink(missing_ok=True)
    failed.unlink(missing_ok=True)
    path = final if check["passed"] else failed
    partial.rename(path)
    report = {"path": str(path), "type": gguf_type, "architecture": arch, "source": str(folder),
              "size_bytes": path.stat().st_size, "write_seconds": round(written, 1),
              "seconds": round(time.monotonic() - started, 1), **check}
    if check["passed"]:
        from engine.export.modelfile import write_modelfile

        add_bos = bool((check.get("metadata") or {}).get("tokenizer.ggml.add_bos_token") in (True, "true", 1))
        report.update(write_modelfile(run_dir, path, folder, session, add_bos))
    (out_dir / f"{final.stem}.check.json").write_text(json.dumps(report, indent=2) + "\n")
    _record(run_dir, report)
    return report


def _dtype(folder: Path) -> str:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(config.get("dtype") or config.get("torch_dtype") or "")


def _record(run_dir: Path, report: dict) -> None:
    """The check's summary as a `gguf` event of the run's stream (the finish screen and `attach` read it)."""
    from engine.runs.events import EventWriter

    keys = ("path", "type", "passed", "reason", "size_bytes", "top1_agreement", "positions", "answers_identical", "answers",
            "tokenization_match", "tokens_per_second", "modelfile", "ollama_command")
    writer = EventWriter(run_dir)
    try:
        writer.emit("gguf", **{k: report[k] for k in keys if k in report},
                    examples=[{k: p.get(k) for k in ("shown", "merged", "gguf", "identical")} for p in report["prompts"][:2]])
    finally:
        writer.close()


def export_command(argv: list[str]) -> int:
    """`lora-tui export RUN_DIR [--gguf TYPE] [--json]`."""
    parser = argparse.ArgumentParser(
        prog="lora-tui export",
        description="Write a finished run as a GGUF file for llama.cpp, Ollama and LM Studio, checked by generating "
                    "with it beside the merged model; an Ollama Modelfile goes beside it.")
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--gguf", default=DEFAULT_TYPE, metavar="TYPE",
                        help=f"one of {', '.join(GGUF_TYPES)} (default {DEFAULT_TYPE})")
    parser.add_argument("--check-prompts", type=int, default=CHECK_PROMPTS, metavar="N",
                        help=f"how many of the run's questions the check asks both models (default {CHECK_PROMPTS})")
    parser.add_argument("--json", action="store_true", help="progress as JSON lines, then the report as one JSON object")
    args = parser.parse_args(argv)
    from engine.quiet import quiet_libraries

    quiet_libraries()
    if args.json:
        out = sys.stdout
        progress = lambda text: print(json.dumps({"progress": text}), file=out, flush=True)  # noqa: E731
    else:
        progress = lambda text: print(text, flush=True)  # noqa: E731
    try:
        if args.check_prompts < 1:
            raise UserError(f"--check-prompts {args.check_prompts}: the check needs at least 1 question (default {CHECK_PROMPTS}).")
        report = export_gguf(args.run_dir, args.gguf, progress, args.check_prompts)
    except UserError as error:
        if args.json:
            print(json.dumps({"error": str(error)}), flush=True)
            return 2
        print(f"lora-tui export: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        if not args.json:
            raise  # tui.cli prints one line and keeps the traceback in its log
        import traceback

        traceback.print_exc()
        first = (str(error).strip().splitlines() or [""])[0]
        print(json.dumps({"error": f"export failed: {type(error).__name__}: {first}"}), flush=True)
        return 1
    if args.json:
        print(json.dumps(report), flush=True)
    else:
        print("\n".join(summary_lines(report)), flush=True)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(export_command(sys.argv[1:]))
