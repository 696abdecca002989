"""The plan on several GPUs (issue 17): per-GPU terms against published figures, the strategy the
recommendation picks, and `lora-tui plan --num-gpus N [--nodes M]` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.planner.architecture import inspect_model
from engine.planner.distributed_terms import per_gpu_model_states
from engine.planner.hardware import HARDWARE_ENV, profile_from_dict
from engine.planner.memory import estimate_memory
from engine.planner.plan import build_plan, format_plan
from engine.planner.recommend import recommend

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "tests" / "configs"
GIB = 1024**3


def zero_states(params: float, weight: float, grad: float, optimizer: float) -> dict[str, float]:
    return {"weights": params * weight, "adapter": 0.0, "gradients": params * grad, "optimizer": params * optimizer}


def test_zero_paper_model_states_7_5b():
    """ZeRO (Rajbhandari et al. 2019), figure 1 / table 1: a 7.5B model with mixed-precision Adam
    holds 2 + 2 + 12 = 16 bytes a parameter: 120 GB on one GPU (what DDP keeps on each), and under
    P_os+g+p over 64 GPUs 120 / 64 = 1.88 GB a GPU."""
    states = zero_states(7.5e9, 2, 2, 12)
    one = per_gpu_model_states(states, "none", 1)
    ddp = per_gpu_model_states(states, "ddp", 64)
    zero3 = per_gpu_model_states(states, "fsdp", 64)
    assert round(sum(one.values()) / 1e9) == 120
    assert round(sum(v for k, v in ddp.items() if k != "buckets") / 1e9) == 120  # every GPU a full copy
    assert ddp["buckets"] == states["gradients"]  # plus the reducer's copy of the gradients
    assert f"{sum(v for k, v in zero3.items() if k != 'gathered') / 1e9:.2f}" == "1.88"


def test_deepspeed_zero3_estimator_documented_example():
    """DeepSpeed's estimate_zero3_model_states_mem_needs_all_live on t5-small (60,506,624 parameters,
    the shared 32,128 x 512 embedding its largest layer), 1 GPU, no offload: "1.08GB per GPU" =
    18 bytes a parameter / GPUs + 4 bytes a parameter of the largest layer (the gathered layer's
    16-bit weights and gradients). Our FSDP term gathers the same 2 + 2 bytes a gathered parameter."""
    total, largest = 60_506_624, 32_128 * 512
    states = zero_states(total, 2, 2, 14)  # DeepSpeed's 18 bytes a parameter
    one_gpu = per_gpu_model_states(states, "none", 1)
    assert f"{(sum(one_gpu.values()) + 4 * largest) / GIB:.2f}" == "1.08"
    # On N GPUs the estimator divides the 18 bytes by N and keeps the largest layer whole: so do we.
    eight = per_gpu_model_states(states, "fsdp", 8, gathered=4 * largest)
    assert sum(eight.values()) == pytest.approx(18 * total / 8 + 4 * largest)


def test_fsdp_divides_the_model_states_and_adds_gathered_layers():
    info = inspect_model(str(CONFIGS / "llama-3.1-70b"))
    kwargs = dict(batch_size=1, backend="unsloth", gradient_checkpointing="unsloth")
    one = estimate_memory(info, "qlora", **kwargs)
    fsdp = estimate_memory(info, "qlora", strategy="fsdp", world_size=2, **kwargs)
    ddp = estimate_memory(info, "qlora", strategy="ddp", world_size=2, **kwargs)
    # QLoRA + FSDP shards the packed 4-bit weights; their quantization states stay whole on each GPU.
    states = fsdp.components["quant_states"]
    assert fsdp.unsharded["weights"] + states == pytest.approx(one.components["weights"], abs=0.002)
    assert fsdp.components["weights"] == pytest.approx(fsdp.unsharded["weights"] / 2, abs=0.002)
    for part in ("adapter", "gradients", "optimizer"):
        assert fsdp.unsharded[part] == one.components[part]
        assert fsdp.components[part] == pytest.approx(one.components[part] / 2, abs=0.002)
    for part in ("weights", "adapter", "gradients", "optimizer"):
        assert ddp.components[part] == one.components[part]
    # Half of the 36.8 GiB 4-bit model a GPU, of which about 1 GiB of states is whole on each.
    assert 1.0 < states < 1.05 and 18 < fsdp.components["weights"] + states < 19.5
    # Two packed 4-bit decoder layers (prefetch) and the 16-bit embedding and head of the root.
    layer = (info.quantizable_params / info.num_layers) * 0.5 / GIB
    root = info.embedding_params * 2 / GIB
    assert fsdp.components["gathered"] == pytest.approx(2 * layer + root, rel=0.05)
    assert ddp.components["buckets"] == one.components["gradients"]
    for part in ("activations", "logits"):  # each GPU its own micro-batch
        assert fsdp.components[part] == ddp.components[part] == one.components[part]
    offload = estimate_memory(info, "qlora", strategy="fsdp", world_size=2, cpu_offload=True, **kwargs)
    assert offload.components["weights"] == 0 and offload.components["quant_states"] == states
    assert offload.offloaded_gb == pytest.approx(
        (sum(one.components[p] for p in ("weights", "adapter", "gradients", "optimizer")) - states) / 2, abs=0.01)
    with pytest.raises(UserError, match="ddp"):
        estimate_memory(info, "qlora", strategy="none", world_size=2)


def test_recommendation_picks_the_strategy():
    big, small = inspect_model(str(CONFIGS / "llama-3.1-70b")), inspect_model(str(CONFIGS / "llama-3.1-8b"))
    one = recommend(small, 24, num_gpus=1)
    assert (one.method, one.strategy) == ("lora", "none")
    ddp = recommend(small, 24, num_gpus=2)  # LoRA fits each GPU: DDP, about twice the throughput
    assert (ddp.method, ddp.strategy, ddp.world_size) == ("lora", "ddp", 2)
    assert "DDP" in ddp.reason and "2x as fast" in ddp.reason
    assert ddp.per_device_train_batch_size * ddp.gradient_accumulation_steps * 2 == 16  # effective batch kept
    fsdp = recommend(small, 24, num_gpus=4)  # full fine-tuning fits only sharded
    assert (fsdp.method, fsdp.strategy, fsdp.cpu_offload) == ("full", "fsdp", False)
    assert "FSDP" in fsdp.reason and "one GPU would allow only LoRA" in fsdp.reason
    # 70B on 24 GB cards: Unsloth would load the whole 4-bit model (36.8 GB) onto every GPU before
    # sharding it, so QLoRA loaded into RAM on the peft backend, sharded with the shards in RAM (no
    # layout fits without the offload: peft keeps the embedding and head in fp32, gathered whole); the
    # backend is pinned (see test_load_term_*).
    four = recommend(big, 24, num_gpus=4)
    assert (four.method, four.strategy, four.cpu_offload, four.backend) == ("qlora", "fsdp", True, "peft")
    two = recommend(big, 24, num_gpus=2)
    assert (two.method, two.strategy, two.cpu_offload, two.backend) == ("qlora", "fsdp", True, "peft")
    assert two.estimate.total_gb <= 24 * 0.9 and "CPU offload" in two.reason
    short = recommend(big, 24, num_gpus=2, node_ram_gb=30)  # the whole model does not fit this node's RAM to load
    assert short.method is None and "load" in short.reason
    nodes = recommend(small, 80, num_gpus=8, nodes=2)
    assert (nodes.strategy, nodes.world_size, nodes.nproc_per_node, nodes.nnodes) == ("ddp", 16, 8, 2)
    single = recommend(small, 24, num_gpus=2, batch_size=1, gradient_accumulation_steps=1)
    assert single.strategy == "none" and single.nproc_per_node == 1  # an effective batch of 1 does not split


def test_load_term_70b_on_two_4090s():
    """FSDP's loading: Unsloth puts the whole (4-bit) model on every GPU before sharding it
    (unsloth/models/fsdp2_load.py); the peft backend loads into RAM and moves only shards to the GPUs."""
    info = inspect_model(str(CONFIGS / "llama-3.1-70b"))
    kwargs = dict(batch_size=4, gradient_checkpointing="unsloth", strategy="fsdp", world_size=2, cpu_offload=True)
    unsloth = estimate_memory(info, "qlora", backend="unsloth", **kwargs)
    # The training step fits a 24 GB card; the load does not: 36.8 GiB of 4-bit weights on each GPU.
    assert unsloth.train_gb < 24 * 0.9 < unsloth.load_gb and unsloth.total_gb == unsloth.load_gb
    assert unsloth.load_gb > 36.8 and unsloth.load_ram_gb == 0
    peft = estimate_memory(info, "lora", backend="peft", **kwargs)
    # A peft GPU holds at most one whole unit while loading (the 16-bit embedding and head: ~2 x 1.96 GiB),
    # the RAM the whole 16-bit model in each process; the training step is the GPU's peak.
    assert peft.load_gb < 6 and peft.total_gb == peft.train_gb and peft.load_ram_gb == pytest.approx(131.4, abs=0.1)
    qlora = estimate_memory(info, "qlora", backend="peft", **kwargs)
    # peft shards the packed 4-bit weights too; their quantization states stay whole on each GPU (about
    # 1/32 of the 4-bit bytes), and loading holds the 4-bit model (non-4-bit parts in fp32) in each process's RAM.
    assert qlora.components["quant_states"] == pytest.approx(1.01, abs=0.02)
    assert qlora.unsharded["weights"] == pytest.approx(39.7, abs=0.1) and qlora.components["weights"] == 0  # in RAM
    assert qlora.total_gb < 24 * 0.9 and qlora.load_ram_gb == pytest.approx(40.7, abs=0.2)
    ddp = estimate_memory(info, "qlora", backend="unsloth", batch_size=1, strategy="ddp", world_size=2)
    assert ddp.load_gb == 0 and ddp.total_gb == ddp.train_gb and "quant_states" not in ddp.components

    two = recommend(info, 24, num_gpus=2)
    assert (two.method, two.strategy, two.cpu_offload, two.backend) == ("qlora", "fsdp", True, "peft")
    assert two.estimate.backend == "peft" and two.estimate.total_gb == two.estimate.train_gb
    assert "Unsloth loads the whole model onto every GPU" in two.reason and "backend is set to peft" in two.reason
    assert "40.7 GB while loading" in two.reason
    assert any("40.7 GB a process" in note and "not checked" in note for note in two.notes)  # a catalogue GPU
    roomy = recommend(info, 24, num_gpus=2, node_ram_gb=128)  # a node's RAM holds the two 4-bit copies
    assert roomy.method == "qlora" and not roomy.notes
    tight = recommend(info, 24, num_gpus=2, node_ram_gb=64)  # 2 x 40.7 GB does not fit 80% of 64 GB
    assert tight.method is None and "40.7 GB of RAM a process (81 GB a node; 64 GB available)" in tight.reason
    assert "about 102 GB of RAM, more GPUs" in tight.reason
    pinned = recommend(info, 24, num_gpus=2, backend="unsloth")  # Unsloth chosen: nothing loads
    assert pinned.method is None and "Unsloth loads the whole 4-bit model onto every GPU" in pinned.reason


def test_quantization_state_bytes_match_bitsandbytes(demo_model_path):
    """The planner's 4-bit bytes against the real thing: the demo model quantized by bitsandbytes (NF4,
    double quantisation) on the CPU, its packed weights and quantization states counted tensor by tensor."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from engine.planner.memory import NF4_DOUBLE_QUANT_BYTES, NF4_PACKED_BYTES

    path = demo_model_path
    info = inspect_model(path)
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=config, dtype=torch.float32)
    packed = states = 0
    for module in model.modules():
        if type(module).__name__ != "Linear4bit":
            continue
        packed += module.weight.numel() * module.weight.element_size()
        q = module.quant_state
        states += sum(t.numel() * t.element_size() for t in (q.absmax, q.state2.absmax))
    assert packed == pytest.approx(info.quantizable_params * NF4_PACKED_BYTES, rel=0.001)
    assert states == pytest.approx(info.quantizable_params * (NF4_DOUBLE_QUANT_BYTES - NF4_PACKED_BYTES), rel=0.02)


def plan_cli(*args: str, hardware: dict | None = None, tmp_path: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    env.pop(HARDWARE_ENV, None)
    if hardware is not None:
        path = tmp_path / "hardware.json"
        path.write_text(json.dumps(hardware))
        env[HARDWARE_ENV] = str(path)
    return subprocess.run([sys.executable, "-m", "tui.cli", "plan", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)


def test_done_when_70b_on_two_4090s(monkeypatch):
    """Issue 17's done-when, with the loading planned: Llama-3.1-70B on 2 x RTX 4090 is QLoRA with FSDP
    and CPU offload (the known recipe for that box), per-GPU parts and the load shown, on the peft backend
    (Unsloth would put the whole 4-bit model on each GPU first); on one 4090 nothing fits.
    The table and the JSON come through `lora-tui plan` (the JSON with torchrun's --nproc-per-node /
    --nnodes); the single 4090 and the --num-gpus twin are build_plan, which plan_command calls."""
    model = str(CONFIGS / "llama-3.1-70b")
    monkeypatch.delenv(HARDWARE_ENV, raising=False)  # as plan_cli: a planned GPU, not a profile file
    done = plan_cli("--model", model, "--gpu", "RTX 4090", "--num-gpus", "2")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "Peak a GPU (GB)" in text and "FSDP /2 offload" in text
    # The table is the peft backend's, which the recommendation pins: the packed 4-bit weights (and the
    # fp32 embedding and head) sharded over the two, in RAM; the 4-bit states whole on each GPU; the load.
    assert "Backend   peft (auto, pinned by the recommendation" in text
    assert "39.71/2 in RAM" in text and "quant_states" in text and "10.12, 41 RAM" in text
    assert "39.76 (no)" in text  # total on unsloth: its load puts the whole 4-bit model on each GPU
    rec_line = next(line for line in text.splitlines() if line.startswith("Recommendation"))
    assert rec_line.startswith("Recommendation  QLoRA") and "FSDP over 2 GPUs with CPU offload" in rec_line
    # torchrun's own names for the same numbers
    done = plan_cli("--model", model, "--gpu", "RTX 4090", "--nproc-per-node", "2", "--nnodes", "1", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    rec = plan["recommendation"]
    assert (rec["method"], rec["strategy"], rec["nproc_per_node"], rec["nnodes"]) == ("qlora", "fsdp", 2, 1)
    assert rec["backend"] == "peft" and rec["cpu_offload"] is True
    assert rec["per_gpu_gb"] <= plan["hardware"]["budget_gb"] and rec["load_ram_gb"] == pytest.approx(40.7, abs=0.2)
    qlora = plan["estimates"]["qlora"]
    assert qlora["per_gpu_gb"] == qlora["total_gb"] == rec["per_gpu_gb"]
    assert qlora["unsharded"]["weights"] == pytest.approx(39.7, abs=0.1)
    assert set(qlora["by_strategy"]) == {"ddp", "fsdp", "fsdp_offload"}
    assert qlora["by_strategy"]["ddp"]["fits"] is False and qlora["by_strategy"]["fsdp"]["fits"] is False
    # peft (pinned): the offloaded step fits and so does its load; on Unsloth the load does not.
    offload = qlora["by_strategy"]["fsdp_offload"]
    assert offload["load_gb"] < offload["train_gb"] == offload["total_gb"] < 21.6 and offload["fits"] is True
    assert qlora["by_backend"]["peft"]["fits"] is True and qlora["by_backend"]["unsloth"]["fits"] is False
    lora = plan["estimates"]["lora"]
    assert lora["by_backend"]["peft"]["fits"] is True and lora["load_ram_gb"] == pytest.approx(131.4, abs=0.1)
    assert lora["by_backend"]["unsloth"]["total_gb"] > 131  # Unsloth's load: the whole 16-bit model on each GPU
    one = build_plan(model, gpu="RTX 4090")["recommendation"]
    assert one["method"] is None and one["strategy"] == "none"
    # --num-gpus 2 is the same plan as --nproc-per-node 2 --nnodes 1 (compared as the CLI prints it: JSON)
    same = json.loads(json.dumps(build_plan(model, gpu="RTX 4090", num_gpus=2)))["recommendation"]
    assert same == rec


def test_num_gpus_on_this_machine(tmp_path):
    two = {"gpus": [{"index": i, "name": "NVIDIA GeForce RTX 4090", "total_gb": 23.99, "compute_capability": [8, 9]}
                    for i in range(2)], "cpu_cores": 16, "ram_total_gb": 125.0, "disk_free_gb": 400.0}
    plan = build_plan(str(CONFIGS / "llama-3.1-8b"), hardware=profile_from_dict(two), num_gpus=2)
    assert plan["recommendation"]["strategy"] == "ddp" and plan["hardware"]["world_size"] == 2
    assert plan["recommendation"]["method"] == "lora" and plan["recommendation"]["load_gb"] == 0  # unchanged
    assert "DDP x2" in format_plan(plan)
    notes = build_plan(str(CONFIGS / "llama-3.1-8b"), hardware=profile_from_dict(two))["notes"]
    assert any("--num-gpus 2" in note for note in notes)
    with pytest.raises(UserError, match="has 2 GPUs"):
        build_plan(str(CONFIGS / "llama-3.1-8b"), hardware=profile_from_dict(two), num_gpus=4)
    cpu = {"gpus": [], "cpu_cores": 8, "ram_total_gb": 31.3}
    with pytest.raises(UserError, match="no GPU"):
        build_plan(str(CONFIGS / "llama-3.1-8b"), hardware=profile_from_dict(cpu), num_gpus=2)
    done = plan_cli("--model", str(CONFIGS / "llama-3.1-8b"), "--gpu", "H100", "--num-gpus", "0")
    assert done.returncode == 2 and "--num-gpus must be a positive whole number" in done.stderr
