"""What lora-tui's wrapping costs in training speed: `lora-tui --replay` against the bare seed recipe.

    .venv/bin/python benchmarks/wrapper_overhead.py [--steps 20] [--skip 4] [--pairs 2]

Both sides train the same session (the demo model, the demo rows tokenized the same way, LoRA r 16
on all seven projections, the same SFTConfig and steps) in their own fresh process, alternately
(A B B A ...) so that drift in a shared machine's load falls on both. Throughput is measured over
the steady state: from the log at step `skip` to the last log, so model loading, data preparation
and the first steps are left out on both sides. lora-tui's figures come from its events.jsonl
(`time`, `tokens_seen`), the bare script's from a TrainerCallback at the same log points (TRL's
`num_tokens`). Both train identical batches step for step, so the ratio is taken per step over the
same steps (see `measure`). Goal (issue 8): lora-tui >= 0.97x the bare recipe.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.replay_runs import (
    DEMO_MODEL,
    ROOT,
    bench_env,
    describe_machine,
    machine,
    make_session,
    median,
    run_replay,
    steady_throughput,
    write_json,
)

GOAL = 0.97


def run_bare(session, work: Path, name: str, timeout: float = 1800) -> dict:
    from engine.session.schema import save_session

    session_path = save_session(session, work / f"{name}.json")
    result_path = work / f"{name}.result.json"
    started = time.perf_counter()
    with open(work / f"{name}.log", "wb") as log:
        code = subprocess.call([sys.executable, str(ROOT / "benchmarks" / "seed_recipe.py"), str(session_path), str(result_path)],
                               stdout=log, stderr=subprocess.STDOUT, env=bench_env(work), cwd=str(work), timeout=timeout)
    if code != 0 or not result_path.exists():
        raise RuntimeError(f"the bare recipe failed (exit {code}); see {work / (name + '.log')}")
    result = json.loads(result_path.read_text())
    result["wall_seconds"] = time.perf_counter() - started
    return result


def measure(steps: int, skip: int, pairs: int, batch_size: int, max_seq_length: int, work: Path,
            model: str = DEMO_MODEL) -> dict:
    rows = []
    for pair in range(pairs):
        # A B, then B A: a load that drifts steadily over the runs falls on both sides equally.
        for side in ("lora-tui", "bare") if pair % 2 == 0 else ("bare", "lora-tui"):
            name = f"{side}-{pair}"
            session = make_session(work / name, model=model, steps=steps, batch_size=batch_size,
                                   max_seq_length=max_seq_length)
            if side == "lora-tui":
                run = run_replay(session, work, name)
                if not run.ok:
                    raise RuntimeError(f"lora-tui --replay failed: {run.error}")
                speed = run.throughput(skip)
                rows.append(dict(side=side, pair=pair, tokens=speed.tokens, seconds=speed.seconds, steps=speed.steps,
                                 tokens_per_second=speed.tokens_per_second, peak_rss_gb=run.peak_rss_gb,
                                 wall_seconds=run.wall_seconds))
            else:
                result = run_bare(session, work, name)
                speed = steady_throughput([tuple(p) for p in result["points"]], skip)
                rows.append(dict(side=side, pair=pair, tokens=speed.tokens, seconds=speed.seconds, steps=speed.steps,
                                 tokens_per_second=speed.tokens_per_second, peak_rss_gb=result["peak_rss_gb"],
                                 wall_seconds=result["wall_seconds"]))
            print(f"  {name:<11} {rows[-1]['tokens_per_second']:9.1f} tokens/s over steps {skip}..{steps}", flush=True)
    # One ratio per pair: the lora-tui run against the bare run next to it. Both train
    # the same batches step for step (same rows, seed and order), so the throughput ratio is the
    # ratio of steps per second over the same steps; the two token counts are reported, not used.
    by_pair = {(r["pair"], r["side"]): r for r in rows}
    ratios = [(a["steps"] / a["seconds"]) / (b["steps"] / b["seconds"])
              for a, b in ((by_pair[(p, "lora-tui")], by_pair[(p, "bare")]) for p in range(pairs))]
    return {"rows": rows, "pair_ratios": ratios, "ratio": median(ratios),
            "same_steps": len({r["steps"] for r in rows}) == 1}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps per run")
    parser.add_argument("--skip", type=int, default=4, help="steps left out at the start (warm-up)")
    parser.add_argument("--pairs", type=int, default=2, help="lora-tui / bare pairs, alternated")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--model", default=DEMO_MODEL, help="hub id or model folder")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    args = parser.parse_args()

    info = machine()
    print(f"Wrapper overhead: lora-tui --replay vs the bare seed recipe ({describe_machine(info)})")
    print(f"{args.model}, demo data, LoRA r 16, batch {args.batch_size}, max_seq_length {args.max_seq_length}, "
          f"{args.steps} steps, steady state from step {args.skip}, {args.pairs} alternated pairs")
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        result = measure(args.steps, args.skip, args.pairs, args.batch_size, args.max_seq_length, Path(tmp), args.model)
    print(f"{'run':<11} {'steps':>5} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'peak RSS':>9}")
    for row in result["rows"]:
        print(f"{row['side'] + '-' + str(row['pair']):<11} {row['steps']:>5} {row['tokens']:>7} {row['seconds']:>8.1f} "
              f"{row['tokens_per_second']:>9.1f} {row['peak_rss_gb']:>8.2f}G")
    if not result["same_steps"]:
        print("note: the runs did not all time the same steps; the ratio is per step")
    ratio = result["ratio"]
    verdict = "meets" if ratio >= GOAL else "misses"
    pairs = ", ".join(f"{r:.3f}" for r in result["pair_ratios"])
    print(f"ratio lora-tui / bare throughput (same batches, steps/s): {ratio:.3f} (pairs: {pairs}); "
          f"{verdict} the >= {GOAL} goal")
    write_json(args.json_out, {"machine": info, "settings": vars(args), **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
