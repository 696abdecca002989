"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo): QLoRA sharded by FSDP2
through engine.training.fsdp.shard_model gives the unsharded 4-bit model's logits and adapter
gradients exactly, on a tiny random Llama (no download).

The packed 4-bit weights are sharded like any parameter (stored in the compute dtype,
bnb_4bit_quant_storage); each rank keeps only its half, and bitsandbytes restores the quantization
state on the gathered weight in forward. Each rank writes what it saw to OUT_DIR/qlora-rank-R.json.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM, set_seed

from engine.training.fsdp import parameters_held, shard_model


def quantized(folder):
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=config, dtype=torch.float32,
                                                 device_map={"": "cpu"})
    set_seed(1)  # the same adapter on both ranks and in the reference; non-zero B so gradients reach A
    return get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False))


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    folder = out / "tiny"
    if rank == 0:
        set_seed(0)
        config = LlamaConfig(vocab_size=128, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
        LlamaForCausalLM(config).save_pretrained(folder)
    dist.barrier()
    reference, model = quantized(folder), quantized(folder)
    for param in reference.parameters():  # what shard_model (and TRL) do to a quantized model's adapters
        if param.requires_grad:
            param.data = param.data.to(torch.bfloat16)
    shard_model(model)
    held, total = parameters_held(model)  # now: FSDP2 keeps the root gathered after a forward without backward
    ids = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(2))
    reference(input_ids=ids, labels=ids).loss.backward()
    output = model(input_ids=ids, labels=ids)
    output.loss.backward()
    with torch.no_grad():
        logits_diff = (model(input_ids=ids).logits - reference(input_ids=ids).logits).abs().max().item()
    want = {n: p.grad for n, p in reference.named_parameters() if p.requires_grad}
    grads_diff = max((p.grad.full_tensor() - want[n]).abs().max().item()
                     for n, p in model.named_parameters() if p.requires_grad)
    packed = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    (out / f"qlora-rank-{rank}.json").write_text(json.dumps(dict(
        logits_diff=logits_diff, grads_diff=grads_diff, held=held, total=total,
        packed_local=list(packed.to_local().shape), packed_whole=list(packed.shape), packed_dtype=str(packed.dtype),
        loss=output.loss.item())))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
