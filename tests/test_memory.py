"""The memory estimate: named parts that follow the model's shapes, and its error on published peaks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.planner.architecture import inspect_model
from engine.planner.memory import (
    COMPONENTS,
    GIB,
    NF4_DOUBLE_QUANT_BYTES,
    estimate_all,
    estimate_by_backend,
    estimate_for_session,
    estimate_memory,
)

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
    # Both backends load fp32 on a CPU: weights take twice the bytes.
    assert cpu.components["weights"] == pytest.approx(smol.params * 4 / GIB, abs=0.001)
    # The worker's RSS keeps most of the un-checkpointed activations (glibc keeps the freed blocks):
    # checkpointing saves little RAM there, unlike on a GPU.
    from engine.planner.memory_terms import CPU_RETAINED, activation_bytes_per_token_layer

    all_layers = smol.num_layers * activation_bytes_per_token_layer(smol) * 2 * 4 * 512 / GIB
    assert cpu.components["activations"] == pytest.approx(CPU_RETAINED * all_layers, rel=0.01)
    assert cpu.components["activations"] > 5 * gpu.components["activations"]
    without = estimate_memory(smol, "lora", device="cpu", gradient_checkpointing=False)
    assert without.components["activations"] > cpu.components["activations"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="half"), "method must be"),
        (dict(method="lora", batch_size=0), "per_device_train_batch_size"),
        (dict(method="lora", seq_len=-1), "max_seq_length"),
        (dict(method="lora", r=0), "lora.r"),
        (dict(method="lora", gradient_checkpointing="sometimes"), "gradient_checkpointing"),
        (dict(method="lora", target_modules=["nope"]), "does not have"),
        (dict(method="lora", backend="deepspeed"), "backend must be"),
        (dict(method="lora", loss_kernel="magic"), "loss_kernel must be"),
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


AL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_backends_differ_where_they_train_differently():
    llama = info("llama-3.1-8b")
    kwargs = dict(r=32, target_modules=AL, batch_size=1, seq_len=8192, gradient_checkpointing="unsloth")
    both = estimate_by_backend(llama, "qlora", **kwargs)
    unsloth, peft = both["unsloth"], both["peft"]
    assert (unsloth.backend, unsloth.loss_kernel, peft.backend, peft.loss_kernel) == ("unsloth", "fused", "peft", "eager")
    # PEFT's prepare_model_for_kbit_training keeps the embeddings and the output head (1.05B) in fp32.
    assert peft.components["weights"] - unsloth.components["weights"] == pytest.approx(llama.embedding_params * 2 / GIB, rel=0.01)
    # "unsloth" checkpointing is plain checkpointing on the peft backend: one hidden state a layer stays.
    assert peft.components["activations"] - unsloth.components["activations"] == pytest.approx(
        llama.num_layers * llama.hidden_size * 2 * 8192 / GIB, rel=0.01)
    # Full logits at 16 bytes against one fused chunk of 1,024 tokens.
    assert peft.components["logits"] == pytest.approx(8192 * llama.vocab_size * 16 / GIB, rel=0.01)
    assert unsloth.components["logits"] == pytest.approx(1024 * llama.vocab_size * 6 / GIB, rel=0.01)
    # "auto" is planned as Unsloth; no backend is the plain terms with the knobs as given.
    assert estimate_memory(llama, "qlora", backend="auto", **kwargs).total_gb == unsloth.total_gb
    plain = estimate_memory(llama, "qlora", **kwargs)
    assert plain.backend is None and plain.loss_kernel == "eager"
    assert plain.components["weights"] == unsloth.components["weights"]
    # An explicit loss kernel overrides the backend's.
    assert estimate_memory(llama, "qlora", backend="peft", loss_kernel="fused", **kwargs).components["logits"] == unsloth.components["logits"]


def test_session_estimate_follows_the_session_backend():
    from engine.session.schema import Session

    model = str(CONFIGS / "llama-3.1-8b")
    session = Session.model_validate({"model": {"name": model, "max_seq_length": 4096}, "method": "qlora",
                                      "backend": "peft", "dataset": {"path": "x.jsonl"}})
    llama = info("llama-3.1-8b")
    peft = estimate_for_session(llama, session)
    assert peft.backend == "peft" and peft.seq_len == 4096 and peft.r == session.lora.r
    assert estimate_for_session(llama, session, backend="auto").total_gb < peft.total_gb


def _rows_of(backend: str):
    bench = _benchmark()
    return [row for row in bench.evaluate() if row["point"].group == backend], bench


@pytest.mark.parametrize("backend", ["unsloth", "peft"])
def test_each_published_point_within_ten_percent_per_backend(backend):
    """Issue 16: each backend's estimate is within 10 % of every published and measured point
    (Unsloth's long-context limits for Llama 3.1 8B and 3.3 70B per card, both columns; this
    machine's CPU runs), and respects every published OOM."""
    rows, bench = _rows_of(backend)
    measured = [row for row in rows if row["point"].kind == "measured"]
    assert len(measured) >= 8
    worst = max(measured, key=lambda row: abs(row["error"]))
    assert abs(worst["error"]) <= bench.GOAL, (worst["point"], worst["comparable"])
    checks = [row for row in rows if row["point"].kind in ("bound", "oom")]
    assert all(row["held"] for row in checks), [row["point"].note for row in checks if not row["held"]]
    if backend == "peft":  # Hugging Face + FA2 runs out of memory on 8 GB (8B) and 48 GB (70B) at any length
        assert len(checks) == 2
    # Real configs on the meta device: the 8B and 70B points are both there.
    assert {row["point"].model for row in measured} >= {"llama-3.1-8b", "llama-3.1-70b", "smollm2-135m"}


def test_calibration_error_of_other_frameworks_and_rules():
    bench = _benchmark()
    figures = bench.summary(bench.evaluate())
    other = figures["other"]
    assert other["measured"]["points"] >= 6
    assert other["measured"]["median_abs_error"] < 0.15
    assert other["measured"]["max_abs_error"] < 0.25
    assert other["rule"]["median_abs_error"] < 0.15
    assert other["bound"]["held"] == other["bound"]["points"]
