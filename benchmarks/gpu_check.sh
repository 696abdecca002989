#!/usr/bin/env bash
# The GPU part of issue 8's benchmarks as one prepared script, about 10 minutes on one GPU:
#   1. wrapper overhead: lora-tui --replay against the bare seed recipe, alternated pairs;
#   2. peak memory against the planner's estimate: torch.cuda.max_memory_allocated (in the worker)
#      and NVML's peak of used device memory, for LoRA and QLoRA at two sequence lengths;
#   3. Unsloth against the peft backend on the same session: tokens/s and peak memory.
# The Python scripts are the same ones `make bench` runs on a CPU; only the settings are longer.
#
#   benchmarks/gpu_check.sh [OUT_DIR]        figures go to OUT_DIR (default $OUT, else benchmarks/gpu-results)
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

OUT_DIR=${1:-${OUT:-benchmarks/gpu-results}}
mkdir -p "$OUT_DIR"
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

# About 4 + 3.5 + 2 minutes; each bounded so that one slow part cannot eat the others' time.
bench overhead 240 benchmarks/wrapper_overhead.py --model "$MODEL" --steps 60 --skip 10 --pairs 2 --batch-size 8 --max-seq-length 512
bench memory 210 benchmarks/peak_memory.py --model "$MODEL" --cases lora:512,lora:2048,qlora:512,qlora:2048 --steps 6 --batch-size 4
bench backends 150 benchmarks/backends.py --model "$MODEL" --steps 60 --skip 10 --batch-size 8 --max-seq-length 512

# ---- issue 16: the memory estimate per backend ------------------------------------------------
# Each backend's torch.cuda.max_memory_allocated (and NVML's peak) against that backend's estimate,
# QLoRA at two sequence lengths; peak_memory.py prints estimate / measured. About 2 x 2 minutes.
# Skip with SKIP_BACKEND_MEMORY=1.
if [ -z "${SKIP_BACKEND_MEMORY:-}" ]; then
    for backend in unsloth peft; do
        bench "memory-$backend" 150 benchmarks/peak_memory.py --backend "$backend" --model "$MODEL" \
            --cases qlora:512,qlora:2048 --steps 3 --batch-size 4
    done
fi
# ---- end of issue 16 ------------------------------------------------------------------------------
exit $status
