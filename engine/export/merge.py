"""Export a finished run: the adapter merged into its base model (`merged/`), and GGUF where the tools are.

Run as its own process (`python -m engine.export merge RUN_DIR`): a training worker that imported
Unsloth has patched transformers for good, and the UI must never load a model. The merge is PEFT's
`merge_and_unload` on the base reloaded unquantized - a QLoRA run's 4-bit base cannot hold merged
weights, so its merged model is 16-bit (the base checkpoint's own dtype) - then checked by loading
the saved folder back and comparing its next-token logits with base + adapter.

    python -m engine.export merge RUN_DIR [--json]
    python -m engine.export gguf RUN_DIR [--outtype q4_k_m] [--json]   (= lora-tui export RUN_DIR --gguf TYPE, engine.export.gguf)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import ModelError, UserError

ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
MERGE_REPORT = "lora_tui_merge.json"
# Text the check runs through both models: an Alpaca prompt, so both the template and free text are seen.
PROBE_TEXT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nName three colours of the rainbow.\n\n### Response:\nRed, orange and"
)
# The merged model must predict the same next token as base + adapter nearly everywhere; 16-bit
# rounding of the merged weights may flip a near-tie or two.
MIN_TOP1_AGREEMENT = 0.9


@dataclass(frozen=True)
class MergeReport:
    path: str
    dtype: str  # the merged weights' dtype, e.g. "bfloat16"
    from_4bit: bool  # the run trained on a 4-bit (QLoRA) base
    top1_agreement: float  # share of positions where merged and base + adapter pick the same next token
    max_abs_logit_diff: float
    size_bytes: int
    note: str


def _adapter_of(run_dir: Path) -> Path:
    adapter = run_dir / ADAPTER_DIR
    if (adapter / "adapter_config.json").is_file():
        return adapter
    if (run_dir / "model" / "config.json").is_file():
        raise UserError(f"{run_dir}: a full fine-tuning run saved the whole model in model/; there is no adapter to merge.")
    raise UserError(f"{run_dir}: no adapter/adapter_config.json; merge needs a finished LoRA or QLoRA run.")


def base_model_path(run_dir: Path) -> str:
    """The adapter's base model as a local folder: adapter_config.json's path, else the session's model."""
    config = json.loads((_adapter_of(run_dir) / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path") or ""
    if base and Path(base).is_dir():
        return base
    from engine.models import resolve_model
    from engine.session.schema import load_session

    return resolve_model(load_session(run_dir / "session.json").model.name).path


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _target_dtype(base: str, trust_remote_code: bool):
    """The merged model keeps the base checkpoint's dtype; a base without one is saved in bf16."""
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base, trust_remote_code=trust_remote_code)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if dtype in (torch.bfloat16, torch.float16, torch.float32) else torch.bfloat16


def _next_token_logits(model, tokenizer):
    import torch

    inputs = tokenizer(PROBE_TEXT, return_tensors="pt").to(model.device)
    with torch.no_grad():
        return model(**inputs).logits.float().cpu()


def merge_adapter(run_dir: str | Path) -> Path:
    """Write run_dir/merged/ (a plain transformers model folder) and return its path."""
    return Path(merge_adapter_report(run_dir).path)


def merge_adapter_report(run_dir: str | Path) -> MergeReport:
    import gc

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.session.schema import load_session

    run_dir = Path(run_dir).resolve()
    adapter = _adapter_of(run_dir)
    session = load_session(run_dir / "session.json")
    trust = session.model.trust_remote_code
    base = base_model_path(run_dir)
    target = _target_dtype(base, trust)
    on_gpu = torch.cuda.is_available()
    # On the CPU the merge is computed in fp32 (exact, and CPU bf16 matmuls are slow), then stored in
    # the target dtype; on a GPU in the target dtype, so an 8B model does not need 32 GB for it.
    compute = target if on_gpu else torch.float32
    device_map = {"": torch.cuda.current_device()} if on_gpu else None

    tokenizer = AutoTokenizer.from_pretrained(str(adapter), trust_remote_code=trust)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=compute, device_map=device_map, trust_remote_code=trust)
    model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    reference = _next_token_logits(model, tokenizer)
    merged = model.merge_and_unload()
    merged = merged.to(target)

    out = run_dir / MERGED_DIR
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    merged.save_pretrained(str(partial))
    tokenizer.save_pretrained(str(partial))
    del merged, model
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()

    # The check: the folder as saved, loaded back like anyone would, against base + adapter.
    reloaded = AutoModelForCausalLM.from_pretrained(str(partial), dtype=compute, device_map=device_map, trust_remote_code=trust)
    reloaded.eval()
    logits = _next_token_logits(reloaded, tokenizer)
    del reloaded
    agreement = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
    max_diff = (logits - reference).abs().max().item()
    if agreement < MIN_TOP1_AGREEMENT:
        shutil.rmtree(partial, ignore_errors=True)
        raise ModelError(
            f"{run_dir}: the merged model disagrees with base + adapter on {1 - agreement:.0%} of next tokens; "
            "merged/ was not written (use the adapter as it is)."
        )
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)

    dtype_name = str(target).replace("torch.", "")
    from_4bit = session.method == "qlora"
    bits = {"bfloat16": "16-bit (bf16)", "float16": "16-bit (fp16)", "float32": "32-bit (fp32)"}[dtype_name]
    if from_4bit:
        note = (f"The merged model is {bits}, not 4-bit: the adapter was merged into the base reloaded unquantized, "
                "because 4-bit weights cannot hold merged values. Quantize it again to serve it in 4-bit.")
    else:
        note = f"The merged model is {bits}, the base checkpoint's own dtype."
    report = MergeReport(
        path=str(out), dtype=dtype_name, from_4bit=from_4bit, top1_agreement=round(agreement, 4),
        max_abs_logit_diff=round(max_diff, 4), size_bytes=folder_size(out), note=note,
    )
    (out / MERGE_REPORT).write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report


# -- command line ----------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.export")
    parser.add_argument("action", choices=["merge", "gguf"])
    parser.add_argument("run_dir")
    parser.add_argument("--outtype", default="q4_k_m", help="the GGUF type (gguf only)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (for the TUI)")
    args = parser.parse_args(argv)
    if args.action == "gguf":
        from engine.export.gguf import export_command

        return export_command([args.run_dir, "--gguf", args.outtype] + (["--json"] if args.json else []))
    from engine.quiet import quiet_libraries

    quiet_libraries()

    try:
        result = asdict(merge_adapter_report(args.run_dir))
        text = f"Merged model: {result['path']} ({result['size_bytes'] / 2**20:,.0f} MiB). {result['note']}"
    except UserError as exc:
        print(json.dumps({"error": str(exc)}) if args.json else f"Error: {exc}", flush=True)
        return 2
    except Exception as exc:  # one line for the person, the traceback on stderr
        import traceback

        traceback.print_exc()
        message = f"{args.action} failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        print(json.dumps({"error": message}) if args.json else f"Error: {message}", flush=True)
        return 1
    print(json.dumps(result) if args.json else text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
