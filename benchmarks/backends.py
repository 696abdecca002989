"""Unsloth against the peft backend (transformers + PEFT + TRL) on the same session.

    .venv/bin/python benchmarks/backends.py [--steps 20] [--skip 4] [--pairs 1] [--method lora]

Both run through `lora-tui --replay`, differing only in the session's `backend`, alternately
(unsloth, peft, unsloth, peft ...). Throughput is the steady state read from events.jsonl (from
the log at step `skip` to the last); peak memory is the worker's peak RSS on the CPU and torch's
peak allocated memory on a GPU. The ratio is unsloth / peft: above 1 means Unsloth is faster
(tokens/s) or leaner (memory: peft / unsloth).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.replay_runs import (
    DEMO_MODEL,
    describe_machine,
    machine,
    make_session,
    median,
    on_gpu,
    run_replay,
    write_json,
)


def peft_backend_missing() -> str | None:
    """Why the peft backend cannot be compared here, or None when it can."""
    if importlib.util.find_spec("engine.training.backends.peft_backend") is None:
        return "engine/backends/peft_backend.py is not there yet (being written); skipping the comparison."
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--skip", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--method", choices=("lora", "qlora"), default="lora")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--model", default=DEMO_MODEL, help="hub id or model folder")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    args = parser.parse_args()

    info = machine()
    print(f"Backends: unsloth vs peft on the same session ({describe_machine(info)})")
    missing = peft_backend_missing()
    if missing:
        print(missing)
        write_json(args.json_out, {"machine": info, "skipped": missing})
        return 0
    gpu = on_gpu()
    print(f"{args.model}, demo data, {args.method}, batch {args.batch_size}, max_seq_length {args.max_seq_length}, "
          f"{args.steps} steps, steady state from step {args.skip}, {args.pairs} alternated pairs")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        work = Path(tmp)
        for pair in range(args.pairs):
            for backend in ("unsloth", "peft"):
                name = f"{backend}-{pair}"
                # Unsloth's own checkpointing mode is plain checkpointing on the peft backend.
                session = make_session(work / name, model=args.model, backend=backend, method=args.method, steps=args.steps,
                                       batch_size=args.batch_size, max_seq_length=args.max_seq_length)
                run = run_replay(session, work, name)
                if not run.ok:
                    print(f"  {name}: FAILED: {run.error}")
                    rows.append({"backend": backend, "pair": pair, "ok": False, "message": run.error})
                    continue
                speed = run.throughput(args.skip)
                peak = run.gpu_peak_allocated_gb if gpu else run.peak_rss_gb
                rows.append({"backend": backend, "pair": pair, "ok": True, "ran_as": run.backend,
                             "tokens_per_second": speed.tokens_per_second, "tokens": speed.tokens,
                             "seconds": speed.seconds, "peak_gb": peak, "peak_rss_gb": run.peak_rss_gb})
                print(f"  {name}: {speed.tokens_per_second:.1f} tokens/s, peak {peak:.2f} GiB", flush=True)

    kind = "torch peak allocated" if gpu else "peak RSS"
    print(f"{'run':<10} {'ran as':<8} {'tokens/s':>9} {kind:>21}")
    for r in rows:
        if r["ok"]:
            print(f"{r['backend'] + '-' + str(r['pair']):<10} {r['ran_as'] or '?':<8} {r['tokens_per_second']:>9.1f} {r['peak_gb']:>20.2f}G")
    good = {b: [r for r in rows if r["ok"] and r["backend"] == b] for b in ("unsloth", "peft")}
    result = {"machine": info, "settings": vars(args), "rows": rows}
    if good["unsloth"] and good["peft"]:
        speed_ratio = median([u["tokens_per_second"] / p["tokens_per_second"] for u, p in zip(good["unsloth"], good["peft"])])
        memory_ratio = median([p["peak_gb"] / u["peak_gb"] for u, p in zip(good["unsloth"], good["peft"])])
        result.update(speed_ratio=speed_ratio, memory_ratio=memory_ratio)
        print(f"ratio unsloth / peft tokens/s: {speed_ratio:.2f}; peak memory peft / unsloth: {memory_ratio:.2f}")
    else:
        print("ratio: not available (a backend failed; see above)")
    write_json(args.json_out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
