#!/usr/bin/env bash
# The GPU part of issue 8's benchmarks as one prepared script, about 10 minutes on one GPU:
#   1. wrapper overhead: lora-tui --replay against the bare seed recipe, alternated pairs;
#   2. peak memory against the planner's estimate: torch.cuda.max_memory_allocated (in the worker)
#      and NVML's peak of used device memory, for LoRA and QLoRA at two sequence lengths;
#   3. Unsloth against the peft backend on the same session: tokens/s and peak memory;
#   and (issue 20) our tokens/s against the training-time model (benchmarks/throughput_gap.py);
#   and (issue 17) FSDP2's CPU offload on one GPU: peak memory without and with it (fsdp_offload.py).
# The Python scripts are the same ones `make bench` runs on a CPU; only the settings are longer.
#
#   benchmarks/gpu_check.sh [OUT_DIR]        figures go to OUT_DIR (default $OUT, else benchmarks/gpu-results)
#   benchmarks/gpu_check.sh --rehearse       (anywhere) check every benchmark line against its script's --help
#   benchmarks/gpu_check.sh --prepare-model  (on a machine with the demo model) copy its config and
#                                            tokenizer to .bench-gpu/model for a machine without it
#
# Environment: the project's .venv (`make setup`) when there is one, else $PYTHON or python3 with
# the stack importable. On an offline GPU machine whose python3 has torch: wheels in .whl/ are
# installed with --no-deps into /tmp/site first, and when the demo model cannot be resolved there,
# the model is rebuilt from .bench-gpu/model with random weights (same shapes: throughput and
# memory do not depend on the weights' values; the loss does, and is not reported).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=HuggingFaceTB/SmolLM2-135M-Instruct

if [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python; else PY=${PYTHON:-python3}; fi

if [ "${1:-}" = "--prepare-model" ]; then
    src=$("$PY" -c "from engine.models import resolve_model; print(resolve_model('$DEMO').path)") || exit 1
    mkdir -p .bench-gpu/model
    for f in config.json generation_config.json tokenizer.json tokenizer_config.json special_tokens_map.json chat_template.jinja; do
        [ -f "$src/$f" ] && cp "$src/$f" .bench-gpu/model/
    done
    grep -qx '/.bench-gpu/' .git/info/exclude 2>/dev/null || echo '/.bench-gpu/' >> .git/info/exclude
    echo "copied the demo model's config and tokenizer to .bench-gpu/model (carry .bench-gpu)"
    exit 0
fi

# --rehearse (on any machine, no GPU needed): every benchmark line below is checked against its
# script's own --help, so a device run is not spent on a typo in a flag or a script name.
REHEARSE=
if [ "${1:-}" = "--rehearse" ]; then REHEARSE=1; shift; fi

OUT_DIR=${1:-${OUT:-benchmarks/gpu-results}}
mkdir -p "$OUT_DIR"
if [ -n "$REHEARSE" ]; then
    export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
    status=0
    for script in $(grep -o 'benchmarks/[a-z_]*\.py' "$0" | sort -u); do
        [ -f "$script" ] || { echo "rehearse: $script is missing"; status=1; continue; }
        help=$("$PY" "$script" --help 2>&1) || { echo "rehearse: $script --help failed: $help" | tail -3; status=1; continue; }
        # Flags after the script's name on its bench lines (and their continuation lines).
        ok=1
        for flag in $(awk -v s="$script" 'index($0, s) {on=1} on {print} on && !/\\$/ {on=0}' "$0" \
                      | grep -o -- '--[a-z][a-z-]*' | sort -u) --json-out; do
            grep -q -- "$flag" <<<"$help" || { echo "rehearse: $script has no $flag"; status=1; ok=; }
        done
        [ -n "$ok" ] && echo "rehearse: $script takes its flags"
    done
    [ $status -eq 0 ] && echo "rehearse: every benchmark line matches its script" | tee "$OUT_DIR/rehearsal.txt"
    exit $status
fi
# No GPU is a normal case here (CI, a laptop, a session without a lent machine): say so and succeed.
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "no NVIDIA GPU here (nvidia-smi finds none): nothing to measure; run this on a GPU machine" | tee "$OUT_DIR/summary.txt"
    exit 0
fi
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}

{
    date -u '+%Y-%m-%d %H:%M UTC'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "no NVIDIA GPU here"; exit 1; }
    echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
    "$PY" -c "import torch, transformers, trl, peft, unsloth; print('torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__, '| peft', peft.__version__, '| unsloth', unsloth.__version__)" 2>/dev/null \
        || { echo "the training stack does not import here (unsloth, trl, peft, transformers, torch); run make setup or carry wheels in .whl/"; exit 1; }
} 2>&1 | tee "$OUT_DIR/machine.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1

MODEL=${MODEL:-$DEMO}
if ! "$PY" -m tui.cli models cache "$MODEL" >/dev/null 2>&1; then
    if [ -f .bench-gpu/model/config.json ]; then
        "$PY" - <<'EOF' || exit 1
import shutil, torch
from transformers import AutoConfig, AutoModelForCausalLM
config = AutoConfig.from_pretrained(".bench-gpu/model")
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
model.save_pretrained("/tmp/bench-gpu-model")
for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
    try:
        shutil.copy(f".bench-gpu/model/{name}", "/tmp/bench-gpu-model/")
    except FileNotFoundError:
        pass
print("model: the demo model's shapes with random weights, in /tmp/bench-gpu-model")
EOF
        MODEL=/tmp/bench-gpu-model
    else
        echo "$MODEL cannot be resolved here; run benchmarks/gpu_check.sh --prepare-model where it can, and carry .bench-gpu"
        exit 1
    fi
fi
echo "model: $MODEL" | tee -a "$OUT_DIR/machine.txt"

status=0
bench() {  # NAME SECONDS SCRIPT ARGS...: one benchmark, its table to NAME.txt and its figures to NAME.json
    local name=$1 limit=$2
    shift 2
    echo "=== $name" | tee "$OUT_DIR/$name.txt"
    timeout "$limit" "$PY" "$@" --json-out "$OUT_DIR/$name.json" 2>&1 | tee -a "$OUT_DIR/$name.txt"
    local code=${PIPESTATUS[0]}
    [ "$code" -eq 0 ] || { echo "$name: exit $code (124 = ran out of its $limit s)" | tee -a "$OUT_DIR/$name.txt"; status=1; }
}

# Bounded so that the whole script fits 10 minutes of device time (3 + 2 + 2 + 2 x 1.5) and one slow
# part cannot eat the others' time; QLoRA's peaks come from the per-backend block below.
bench overhead 180 benchmarks/wrapper_overhead.py --model "$MODEL" --steps 60 --skip 10 --pairs 2 --batch-size 8 --max-seq-length 512
bench memory 120 benchmarks/peak_memory.py --model "$MODEL" --cases lora:512,lora:2048 --steps 6 --batch-size 4
bench backends 120 benchmarks/backends.py --model "$MODEL" --steps 60 --skip 10 --batch-size 8 --max-seq-length 512

# ---- issue 16: the memory estimate per backend ------------------------------------------------
# Each backend's torch.cuda.max_memory_allocated (and NVML's peak) against that backend's estimate,
# QLoRA at two sequence lengths; peak_memory.py prints estimate / measured. About 2 x 2 minutes.
# Skip with SKIP_BACKEND_MEMORY=1.
if [ -z "${SKIP_BACKEND_MEMORY:-}" ]; then
    for backend in unsloth peft; do
        bench "memory-$backend" 90 benchmarks/peak_memory.py --backend "$backend" --model "$MODEL" \
            --cases qlora:512,qlora:2048 --steps 3 --batch-size 4
    done
fi
# ---- end of issue 16 ------------------------------------------------------------------------------

# ---- issue 20: our tokens/s against the training-time model ----------------------------------------
# LoRA on Unsloth, a 1B-class model (tests/configs/llama-3.2-1b's shapes with random weights, the demo
# tokenizer) and the demo model; throughput_gap.py prints measured tokens/s, the model's figure for
# this GPU's catalogue peak_tflops, and model / measured. About 2.5 + 1.5 minutes.
# Skip with SKIP_THROUGHPUT_GAP=1.
if [ -z "${SKIP_THROUGHPUT_GAP:-}" ]; then
    bench throughput-gap-1b 150 benchmarks/throughput_gap.py --from-config tests/configs/llama-3.2-1b --model "$MODEL" \
        --steps 30 --skip 10 --batch-size 8 --max-seq-length 512
    bench throughput-gap-demo 90 benchmarks/throughput_gap.py --model "$MODEL" --steps 30 --skip 10 --batch-size 8 \
        --max-seq-length 512
fi
# ---- end of issue 20 ------------------------------------------------------------------------------

# ---- issue 17: several GPUs (NCCL) and 4-bit under FSDP ------------------------------------------
# The parts of tests/test_distributed.py a CPU cannot run: NCCL between GPUs, FSDP2 on CUDA, and
# QLoRA under FSDP (both backends store the 4-bit weights in the compute dtype; the peft backend loads
# them into RAM and shards them with engine.training.fsdp, the 70B-on-two-24-GB recipe). Each case is a
# 2-process `lora-tui --replay` of 20 steps, about 2 minutes; its checks are printed as PASS / FAIL.
# Needs two GPUs (NCCL refuses two ranks on one GPU): on fewer it says so and skips. Skip with
# SKIP_DISTRIBUTED=1.
GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
if [ -n "${SKIP_DISTRIBUTED:-}" ]; then
    :
elif [ "$GPUS" -lt 2 ]; then
    echo "=== distributed: skipped, $GPUS GPU here (NCCL needs two or more)" | tee "$OUT_DIR/distributed.txt"
else
    distributed_case() {  # NAME SECONDS BACKEND METHOD STRATEGY
        local name=$1 limit=$2 dir=$OUT_DIR/$1
        rm -rf "$dir" && mkdir -p "$dir"
        echo "=== $name" | tee "$OUT_DIR/$name.txt"
        "$PY" - "$dir" "$MODEL" "$3" "$4" "$5" <<'EOF'
import json, sys
from engine.paths import PROJECT_ROOT
folder, model, backend, method, strategy = sys.argv[1:]
session = {"version": 1, "model": {"name": model, "max_seq_length": 512}, "method": method, "backend": backend,
           "dataset": {"path": str(PROJECT_ROOT / "data" / "demo" / "extract_contacts.jsonl"), "eval_fraction": 0.0},
           "training": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "max_steps": 20,
                        "logging_steps": 5, "save_steps": 10},
           "output": {"dir": folder + "/run"}, "distributed": {"nproc_per_node": 2, "strategy": strategy}}
json.dump(session, open(folder + "/session.json", "w"), indent=1)
EOF
        timeout "$2" "$PY" -m tui.cli --replay "$dir/session.json" 2>&1 | tail -n 20 | tee -a "$OUT_DIR/$name.txt"
        "$PY" - "$dir/run" "$5" "$4" <<'EOF' 2>&1 | tee -a "$OUT_DIR/$name.txt"
import json, sys
from pathlib import Path
from engine.runs.events import read_events
from engine.training.distributed import read_rank_reports
run, strategy, method = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
events, reports = read_events(run), read_rank_reports(run)
starts = [e for e in events if e["event"] == "start"]
model = next((e for e in events if e["event"] == "model"), {})
checks = {
    "one start, world_size 2": len(starts) == 1 and starts[0].get("world_size") == 2,
    "completed": bool(events) and events[-1].get("event") == "end" and events[-1].get("status") == "completed",
    "one adapter": (run / "adapter" / "adapter_model.safetensors").is_file(),
    "both ranks ok": [r.get("outcome") for r in reports] == ["ok", "ok"],
    "memory of both GPUs logged": any(len(e.get("memory_gb_ranks") or []) == 2 for e in events if e["event"] == "log"),
}
if strategy == "ddp":
    checks["equal weights on both ranks"] = len({r.get("trainable_sha256") for r in reports}) == 1
else:
    share = [r["params_held"] / r["params_total"] for r in reports if r.get("params_total")]
    checks["about half the parameters per rank"] = len(share) == 2 and all(0.4 < s < 0.6 for s in share)
if method == "qlora":
    checks["4-bit stored in the compute dtype"] = model.get("bnb_4bit_quant_storage") in ("bfloat16", "float16")
for name, ok in checks.items():
    print(("PASS " if ok else "FAIL ") + name)
print("model:", {k: model.get(k) for k in ("quantized_modules", "bnb_4bit_quant_storage", "dtype")})
print("ranks:", [{k: r.get(k) for k in ("rank", "outcome", "params_held", "params_total", "message")} for r in reports])
sys.exit(0 if all(checks.values()) else 1)
EOF
        [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    }
    distributed_case ddp-peft 240 peft lora ddp
    distributed_case fsdp-peft 240 peft lora fsdp
    distributed_case fsdp-qlora-unsloth 300 unsloth qlora fsdp
    distributed_case fsdp-qlora-peft 300 peft qlora fsdp
fi
# ---- end of issue 17 -------------------------------------------------------------------------------

# ---- issue 17 follow-up: FSDP2 with CPU offload (distributed.cpu_offload) on one GPU -----------------
# The CPU tests run the offload's code path over gloo, where nothing moves; here it runs on CUDA:
# pinned shards, the cpu:gloo,cuda:nccl group for the clipping's CPU collective, and the memory it
# saves. One process under torchrun (world size 1: the whole model is one shard, in RAM with the
# offload), the peft backend's own shard_model, LoRA, QLoRA (4-bit loaded in RAM, its quantization states
# moved to the GPU with the shards) and full fine-tuning, each without and with the offload; fsdp_offload.py prints the peak GPU memory of the steps and the seconds a step for both,
# and fails when a loss is not finite or a shard is not where the setting says. About 1.5 minutes.
# Skip with SKIP_FSDP_OFFLOAD=1.
if [ -z "${SKIP_FSDP_OFFLOAD:-}" ]; then
    TORCHRUN_ONE="-m torch.distributed.run --standalone --nproc_per_node 1"
    bench fsdp-offload 180 $TORCHRUN_ONE benchmarks/fsdp_offload.py --model "$MODEL" --cases lora,qlora,full --steps 6 \
        --batch-size 4 --max-seq-length 512
fi
# ---- end of the issue 17 follow-up ------------------------------------------------------------------
exit $status
