"""Our own tokens/s on this GPU against the training-time model (engine/planner/throughput.py).

    .venv/bin/python benchmarks/throughput_gap.py [--model M | --from-config DIR] [--method lora]
        [--backend unsloth] [--steps 40] [--skip 10] [--batch-size 8] [--max-seq-length 512]

Runs `lora-tui --replay` on the demo data (as benchmarks/backends.py does), reads the steady
tokens/s from events.jsonl, and prints it beside the model's figure for this GPU (its catalogue
`peak_tflops`, found from the name CUDA reports) and the ratio model / measured. `--from-config DIR`
trains a model of that config's shapes with random weights (tokens/s does not depend on the
weights' values) and the demo model's tokenizer, e.g. tests/configs/llama-3.2-1b: a 135M model is
mostly overhead on a datacentre GPU, which the FLOP count does not describe. Needs a GPU; on a
machine without one it says so and exits 0.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.replay_runs import DEMO_MODEL, make_session, median, on_gpu, run_replay, write_json

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "generation_config.json")


def random_model(config_dir: str, out: Path, tokenizer_from: str) -> str:
    """A model of `config_dir`'s shapes with random bf16 weights and the tokenizer of `tokenizer_from`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from engine.models import resolve_model

    config = AutoConfig.from_pretrained(config_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    source = Path(resolve_model(tokenizer_from).path)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, out / name)
    return str(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEMO_MODEL, help="hub id or model folder")
    parser.add_argument("--from-config", metavar="DIR", help="train random weights of this config's shapes instead")
    parser.add_argument("--method", choices=("lora", "qlora", "full"), default="lora")
    parser.add_argument("--backend", choices=("unsloth", "peft"), default="unsloth")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--skip", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=1, help="runs to take the median of")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if not on_gpu():
        print("no GPU here: the gap to the throughput model is measured on a GPU")
        write_json(args.json_out, {"skipped": "no GPU"})
        return 0
    import torch

    from engine.planner import throughput
    from engine.planner.architecture import inspect_model
    from engine.planner.hardware import find_gpu
    from engine.planner.target_modules import count_trainable_params

    name = torch.cuda.get_device_name(0)
    try:
        spec = find_gpu(name)
    except Exception as error:  # a GPU the catalogue does not know: nothing to compare with
        print(f"{name}: {error}")
        write_json(args.json_out, {"gpu": name, "skipped": str(error)})
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-gap-") as tmp:
        work = Path(tmp)
        model = random_model(args.from_config, work / "model", args.model) if args.from_config else args.model
        speeds, rows = [], []
        for pair in range(args.pairs):
            session = make_session(work / f"run-{pair}", model=model, backend=args.backend, method=args.method,
                                   steps=args.steps, batch_size=args.batch_size, max_seq_length=args.max_seq_length)
            run = run_replay(session, work, f"run-{pair}")
            if not run.ok:
                print(f"run {pair}: FAILED: {run.error}")
                continue
            speed = run.throughput(args.skip)
            speeds.append(speed.tokens_per_second)
            data = next((e for e in run.events if e.get("event") == "data"), {})
            rows.append(float((data.get("token_stats") or {}).get("median") or args.max_seq_length))
            print(f"run {pair}: {speed.tokens_per_second:,.0f} tokens/s ({run.backend or args.backend} backend)", flush=True)
        if not speeds:
            write_json(args.json_out, {"gpu": name, "failed": True})
            return 1
        info = inspect_model(model)
    measured = median(speeds)
    tokens_per_row = median(rows)
    trainable = count_trainable_params(info, info.presets["recommended"], 16) if args.method != "full" else 0
    ours = throughput.estimate_time(
        info, args.method, peak_tflops=spec.peak_tflops, train_tokens=1, tokens_per_row=tokens_per_row,
        batch_size=args.batch_size, trainable_params=trainable, backend=args.backend,
    ).tokens_per_second
    ratio = ours / measured
    print(f"{name} ({spec.name}, {spec.peak_tflops:g} TFLOPS): {info.params / 1e6:,.0f}M parameters, {args.method}, "
          f"{args.backend}, batch {args.batch_size} x about {tokens_per_row:,.0f} tokens")
    print(f"measured {measured:,.0f} tokens/s; the model says {ours:,.0f}; model / measured = {ratio:.2f} "
          f"(the time estimate is {'optimistic' if ratio > 1 else 'pessimistic'} by {abs(ratio - 1):.0%} here)")
    write_json(args.json_out, {"gpu": name, "catalogue": spec.name, "peak_tflops": spec.peak_tflops,
                               "params": info.params, "settings": vars(args), "measured_tokens_per_second": measured,
                               "model_tokens_per_second": ours, "ratio": ratio, "tokens_per_row": tokens_per_row})
    return 0


if __name__ == "__main__":
    sys.exit(main())
