"""How close the planner's peak-memory estimate is to a real run of the same session.

    .venv/bin/python benchmarks/peak_memory.py [--cases lora:256,lora:512,qlora:256,qlora:512] [--steps 4]

Each case is a real `lora-tui --replay` of the demo model on rows long enough that every batch is
full (truncated at max_seq_length), and the estimate is `engine.planner.memory.estimate_for_session` on
`engine.planner.architecture.inspect_model`: that session's settings on its backend's terms (--backend).

  CPU: measured = the worker's peak RSS (the kernel's high-water mark, getrusage of the reaped
       worker), against the estimate with device="cpu" (which includes the Python process and
       torch's libraries as overhead).
  GPU: measured = torch.cuda.max_memory_allocated in the worker (the last `log` event's
       memory_gb), against the estimate less its overhead (CUDA context, fragmentation), which
       torch does not count; and NVML's peak of used device memory during the run, less what was
       used before it, against the whole estimate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.replay_runs import (
    DEMO_MODEL,
    describe_machine,
    machine,
    make_session,
    on_gpu,
    run_replay,
    write_json,
    write_long_rows,
)


def planner_estimate(session, device: str):
    """The planner's figure for exactly this session, on its backend's terms."""
    from engine.models import resolve_model
    from engine.planner.architecture import inspect_model
    from engine.planner.memory import estimate_for_session

    info = inspect_model(resolve_model(session.model.name).path)
    return estimate_for_session(info, session, device=device)


class NvmlPeak:
    """Samples used device memory (GiB) of GPU 0 while a run goes on; keeps the baseline and the peak."""

    def __init__(self):
        import pynvml

        pynvml.nvmlInit()
        self.nvml = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.baseline = self.used()

    def used(self) -> float:
        return self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**30

    def __call__(self, samples: dict) -> None:
        samples["nvml_peak_gb"] = max(samples.get("nvml_peak_gb", 0.0), self.used())
        samples["nvml_baseline_gb"] = self.baseline


def parse_cases(text: str) -> list[tuple[str, int]]:
    cases = []
    for item in text.split(","):
        method, _, seq = item.strip().partition(":")
        if method not in ("lora", "qlora", "full") or not seq.isdigit():
            raise SystemExit(f"--cases: {item!r} is not METHOD:SEQ_LEN such as lora:512")
        cases.append((method, int(seq)))
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="lora:256,lora:512,qlora:256,qlora:512", help="METHOD:SEQ_LEN, comma-separated")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--backend", choices=("unsloth", "peft"), default="unsloth")
    parser.add_argument("--model", default=DEMO_MODEL)
    parser.add_argument("--gradient-checkpointing", default="unsloth", choices=("unsloth", "true", "false"),
                        help="the session's training.gradient_checkpointing (default unsloth)")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    args = parser.parse_args()

    from engine.quiet import quiet_libraries

    quiet_libraries()  # the planner imports torch (meta-device models): keep its notices off the table
    checkpointing = {"true": True, "false": False}.get(args.gradient_checkpointing, args.gradient_checkpointing)
    gpu = on_gpu()
    device = "cuda" if gpu else "cpu"
    info = machine()
    print(f"Peak memory: measured vs the planner's estimate, {args.backend} backend ({describe_machine(info)})")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        for method, seq_len in parse_cases(args.cases):
            data = write_long_rows(work / f"rows-{seq_len}.jsonl", rows=64, words=seq_len)  # > seq_len tokens a row
            name = f"{method}-{seq_len}"
            session = make_session(work / name, dataset=data, model=args.model, method=method, backend=args.backend,
                                   max_seq_length=seq_len, batch_size=args.batch_size, steps=args.steps,
                                   gradient_checkpointing=checkpointing)
            estimate = planner_estimate(session, device)
            sampler = NvmlPeak() if gpu else None
            run = run_replay(session, work, name, sampler=sampler)
            row = {"method": method, "seq_len": seq_len, "batch_size": args.batch_size, "ok": run.ok,
                   "message": run.error, "estimate_gb": estimate.total_gb, "components": estimate.components,
                   "peak_rss_gb": run.peak_rss_gb}
            if gpu:
                row["torch_peak_gb"] = run.gpu_peak_allocated_gb
                row["nvml_peak_gb"] = run.samples.get("nvml_peak_gb", 0.0) - run.samples.get("nvml_baseline_gb", 0.0)
                row["estimate_active_gb"] = estimate.total_gb - estimate.components["overhead"]
            rows.append(row)
            print(f"  {name}: {'ok' if run.ok else 'FAILED: ' + run.error}", flush=True)

    if gpu:
        print(f"{'method':<6} {'seq':>5} {'torch peak':>10} {'est. less overhead':>18} {'error':>7} "
              f"{'NVML peak':>10} {'estimate':>9} {'error':>7}")
        for r in rows:
            if not r["ok"] or r["torch_peak_gb"] is None:
                print(f"{r['method']:<6} {r['seq_len']:>5}  failed: {r['message']}")
                continue
            e1 = r["estimate_active_gb"] / r["torch_peak_gb"] - 1
            e2 = r["estimate_gb"] / r["nvml_peak_gb"] - 1 if r["nvml_peak_gb"] > 0 else float("nan")
            r.update(error_torch=e1, error_nvml=e2)
            print(f"{r['method']:<6} {r['seq_len']:>5} {r['torch_peak_gb']:>9.2f}G {r['estimate_active_gb']:>17.2f}G "
                  f"{e1:>+7.0%} {r['nvml_peak_gb']:>9.2f}G {r['estimate_gb']:>8.2f}G {e2:>+7.0%}")
    else:
        print(f"{'method':<6} {'seq':>5} {'batch':>5} {'peak RSS':>9} {'estimate':>9} {'error':>7}  largest parts of the estimate")
        for r in rows:
            if not r["ok"] or not r["peak_rss_gb"]:
                print(f"{r['method']:<6} {r['seq_len']:>5}  failed: {r['message']}")
                continue
            r["error"] = r["estimate_gb"] / r["peak_rss_gb"] - 1
            parts = sorted(r["components"].items(), key=lambda kv: -kv[1])[:3]
            print(f"{r['method']:<6} {r['seq_len']:>5} {r['batch_size']:>5} {r['peak_rss_gb']:>8.2f}G {r['estimate_gb']:>8.2f}G "
                  f"{r['error']:>+7.0%}  {', '.join(f'{k} {v:.2f}' for k, v in parts)}")
    errors = [abs(r["error"]) for r in rows if isinstance(r.get("error"), float)]
    errors += [abs(r["error_torch"]) for r in rows if isinstance(r.get("error_torch"), float)]
    if errors:
        print(f"estimate error (estimate / measured - 1): worst |error| {max(errors):.0%} over {len(errors)} runs")
    write_json(args.json_out, {"machine": info, "device": device, "settings": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
