"""The memory estimate: named parts that follow the model's shapes, and its error on published peaks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.planner.architecture import inspect_model
from engine.planner.memory import COMPONENTS, GIB, NF4_DOUBLE_QUANT_BYTES, estimate_all, estimate_memory

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "tests" / "configs"


def info(name):
    return inspect_model(str(CONFIGS / name))


def test_parts_are_named_and_add_up():
    for method, estimate in estimate_all(info("llama-3.1-8b")).items():
        assert estimate.method == method
        assert list(estimate.components) == list(COMPONENTS)
        assert estimate.total_gb == pytest.approx(sum(estimate.components.values()), abs=0.02)


def test_methods_order_and_weights_by_dtype():
    llama = info("llama-3.1-8b")
    full, lora, qlora = (estimate_memory(llama, m) for m in ("full", "lora", "qlora"))
    assert qlora.total_gb < lora.total_gb < full.total_gb
    assert lora.components["weights"] == pytest.approx(llama.params * 2 / GIB, abs=0.001)
    four_bit = llama.quantizable_params * NF4_DOUBLE_QUANT_BYTES + (llama.params - llama.quantizable_params) * 2
    assert qlora.components["weights"] == pytest.approx(four_bit / GIB, abs=0.001)
    # Embeddings and lm_head (1.05B of 8B parameters) stay 16-bit: about 2 of the 5.3 GB.
    assert 5.0 < qlora.components["weights"] < 5.6
    assert full.components["adapter"] == 0 and lora.components["adapter"] > 0
    assert full.components["gradients"] == pytest.approx(full.components["weights"], rel=1e-3)
    assert lora.trainable_params == 41_943_040


def test_optimizer_states_by_optim():
    llama = info("llama-2-7b")
    eight = estimate_memory(llama, "full", optim="adamw_8bit").components["optimizer"]
    torch32 = estimate_memory(llama, "full", optim="adamw_torch").components["optimizer"]
    assert torch32 == pytest.approx(2 * eight, rel=1e-3)
    lora8 = estimate_memory(llama, "lora", optim="adamw_8bit").components["optimizer"]
    lora32 = estimate_memory(llama, "lora", optim="adamw_torch").components["optimizer"]
    assert lora32 == pytest.approx(4 * lora8, rel=1e-2)  # fp32 adapters: 8 bytes against 2
    # On a CPU the 8-bit optimizer is replaced by torch AdamW.
    assert estimate_memory(llama, "lora", device="cpu").optim == "adamw_torch"


def test_activations_follow_batch_sequence_and_checkpointing():
    llama = info("llama-3.1-8b")
    base = estimate_memory(llama, "qlora", batch_size=1, seq_len=1024)
    double = estimate_memory(llama, "qlora", batch_size=2, seq_len=1024)
    assert double.components["activations"] == pytest.approx(2 * base.components["activations"], rel=0.01)
    assert double.components["logits"] == pytest.approx(2 * base.components["logits"], rel=0.01)
    without = estimate_memory(llama, "qlora", batch_size=1, seq_len=1024, gradient_checkpointing=False)
    offloaded = estimate_memory(llama, "qlora", batch_size=1, seq_len=1024, gradient_checkpointing="unsloth")
    assert offloaded.components["activations"] < base.components["activations"] < without.components["activations"] / 5


def test_logits_grow_with_the_vocabulary():
    small_vocab = estimate_memory(info("llama-2-7b"), "lora", batch_size=4, seq_len=512)
    big_vocab = estimate_memory(info("gemma-2-9b"), "lora", batch_size=4, seq_len=512)
    assert big_vocab.components["logits"] == pytest.approx(8 * small_vocab.components["logits"], rel=0.01)  # 256k vs 32k
    fused = estimate_memory(info("gemma-2-9b"), "lora", batch_size=4, seq_len=512, loss_kernel="fused")
    assert fused.components["logits"] < big_vocab.components["logits"] / 3


def test_cpu_overhead_has_no_cuda_context():
    smol = info("smollm2-135m")
    gpu = estimate_memory(smol, "lora")
    cpu = estimate_memory(smol, "lora", device="cpu")
    assert cpu.device == "cpu" and gpu.components["overhead"] != cpu.components["overhead"]
    # Unsloth loads fp32 on a CPU: weights and activations take twice the bytes.
    assert cpu.components["weights"] == pytest.approx(smol.params * 4 / GIB, abs=0.001)
    assert cpu.components["activations"] == pytest.approx(2 * gpu.components["activations"], rel=0.01)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="half"), "method must be"),
        (dict(method="lora", batch_size=0), "per_device_train_batch_size"),
        (dict(method="lora", seq_len=-1), "max_seq_length"),
        (dict(method="lora", r=0), "lora.r"),
        (dict(method="lora", gradient_checkpointing="sometimes"), "gradient_checkpointing"),
        (dict(method="lora", target_modules=["nope"]), "does not have"),
    ],
)
def test_bad_settings_are_one_sentence(kwargs, message):
    with pytest.raises(UserError, match=message):
        estimate_memory(info("smollm2-135m"), **kwargs)


def test_unknown_optimizer_is_costed_conservatively():
    llama = info("llama-2-7b")
    unknown = estimate_memory(llama, "full", optim="some_new_optimizer")
    assert unknown.components["optimizer"] >= estimate_memory(llama, "full", optim="adamw_torch").components["optimizer"]


def _benchmark():
    path = ROOT / "benchmarks" / "memory_estimate.py"
    spec = importlib.util.spec_from_file_location("memory_estimate_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_calibration_error_on_published_peaks():
    bench = _benchmark()
    rows = bench.evaluate()
    figures = bench.summary(rows)
    assert figures["measured"]["points"] >= 10
    assert figures["measured"]["median_abs_error"] < 0.10
    assert figures["measured"]["max_abs_error"] < 0.25
    assert figures["rule"]["median_abs_error"] < 0.15
    assert figures["bound"]["held"] == figures["bound"]["points"]
