"""FSDP2 with and without CPU offload (distributed.cpu_offload): peak GPU memory of a few training steps.

Run under torchrun (world size 1 is enough to see the offload: the whole model is one shard):

    python -m torch.distributed.run --standalone --nproc_per_node 1 benchmarks/fsdp_offload.py --model M

Each case loads the model on this rank's device (qlora: 4-bit in RAM with bnb_4bit_quant_storage = the
compute dtype, as the peft backend loads it under FSDP, so shard_model moves the shards and the
quantization states to the GPU), shards it with the peft backend's own
`engine.training.fsdp.shard_model` (with `cpu_offload` off, then on), and trains `--steps` steps on
random tokens: forward, backward, gradient clipping (the Trainer's; with offload a CPU collective,
which needs the gloo half of the mesh's group), AdamW. It prints, per case, the GPU memory the model
holds after sharding and the peak during the steps (torch.cuda.max_memory_allocated), the seconds a
step, and where the shards live; `--json-out` writes the same figures. On a CPU (gloo) it runs the same
code path and reports no GPU memory.
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct", help="hub id or folder")
    parser.add_argument("--cases", default="lora,full", help="comma-separated: lora (r 16, all linear layers), qlora (the same on 4-bit NF4) and/or full")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--json-out", default=None, help="write the figures here")
    args = parser.parse_args(argv)

    import torch
    import torch.distributed as dist

    on_gpu = torch.cuda.is_available()
    dist.init_process_group("nccl" if on_gpu else "gloo")
    if on_gpu:
        import os

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    rank = dist.get_rank()
    results = []
    for method in [c.strip() for c in args.cases.split(",") if c.strip()]:
        for offload in (False, True):
            results.append(run_case(args, method, offload, on_gpu))
            if rank == 0:
                print(_line(results[-1]), flush=True)
    if rank == 0:
        for method in {r["method"] for r in results}:
            off, on = (next(r for r in results if r["method"] == method and r["cpu_offload"] is o) for o in (False, True))
            if off["peak_gb"] is not None:
                print(f"{method}: peak {off['peak_gb']:.3f} GB without offload, {on['peak_gb']:.3f} GB with "
                      f"({on['peak_gb'] / off['peak_gb']:.0%}); step {off['step_s']:.3f} s -> {on['step_s']:.3f} s")
        if args.json_out:
            with open(args.json_out, "w") as handle:
                json.dump({"world_size": dist.get_world_size(), "cases": results}, handle, indent=1)
    dist.destroy_process_group()
    ok = all(r["finite"] and r["offload_policy"] == r["cpu_offload"] for r in results)
    if on_gpu:  # on a GPU the offloaded shards are in RAM and the others on the device
        ok = ok and all(r["shards_on_cpu"] == r["cpu_offload"] for r in results)
        ok = ok and all(r["quant_states_on"] in (None, "cuda") for r in results)  # 4-bit states beside the weights
    return 0 if ok else 1


def _line(r: dict) -> str:
    memory = (f"after shard {r['resident_gb']:.3f} GB, peak {r['peak_gb']:.3f} GB" if r["peak_gb"] is not None
              else "no GPU")
    return (f"{r['method']:<4} offload {'on ' if r['cpu_offload'] else 'off'}: {memory}, {r['step_s']:.3f} s a step, "
            f"shards on {'CPU' if r['shards_on_cpu'] else 'GPU'}, loss {r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}")


def run_case(args, method: str, offload: bool, on_gpu: bool) -> dict:
    import gc

    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from engine.training.fsdp import parameters_offloaded, shard_model

    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    path = _model_path(args.model)
    dtype = torch.bfloat16 if on_gpu else torch.float32
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, quantization_config=quantization,
                                                     device_map={"": "cpu"})
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    if method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.config.use_cache = False
    shard_model(model, cpu_offload=offload)
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated() / 2**30
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    generator = torch.Generator().manual_seed(dist.get_rank())
    vocab = model.config.vocab_size
    losses, times = [], []
    for _ in range(args.steps):
        tokens = torch.randint(0, vocab, (args.batch_size, args.max_seq_length), generator=generator).to(device)
        start = time.perf_counter()
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)  # what the Trainer does; a CPU collective with offload
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if on_gpu:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        losses.append(float(loss.detach().float().cpu()))
    local = next(p for p in model.parameters())
    local = local.to_local() if hasattr(local, "to_local") else local
    states = [m.quant_state for m in model.modules() if getattr(m, "quant_state", None) is not None]
    result = {
        "quant_states_on": states[0].absmax.device.type if states else None,
        "method": method, "cpu_offload": offload, "offload_policy": parameters_offloaded(model),
        "shards_on_cpu": local.device.type == "cpu", "steps": args.steps, "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length, "losses": losses,
        "finite": all(x == x and abs(x) != float("inf") for x in losses),
        "step_s": sorted(times)[len(times) // 2] if times else None,  # the median step
        "resident_gb": resident if on_gpu else None,
        "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None,
    }
    del model, optimizer, params, local
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
    return result


def _model_path(name: str) -> str:
    from pathlib import Path

    if Path(name).is_dir():
        return name
    from engine.models import resolve_model

    return str(resolve_model(name).path)


if __name__ == "__main__":
    raise SystemExit(main())
