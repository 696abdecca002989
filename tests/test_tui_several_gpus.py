"""The wizard on a machine with two GPUs (a fake profile through the hardware seam): the hardware
step lists both and lets the person use N of them; the method step plans per GPU, names the
strategy, and applying it writes the session's `distributed` section (issue 17)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from textual.widgets import Input
from tui_helpers import DEMO_DATA, isolate, screen_text, settle

from tui.app import build_app

SIZE = (120, 40)
CONFIGS = Path(__file__).resolve().parent / "configs"
GPU = {"name": "NVIDIA GeForce RTX 4090", "total_gb": 23.99, "free_gb": 23.1, "used_gb": 0.89,
       "compute_capability": [8, 9], "bf16": True, "driver": "560.35.03"}


def two_gpus(tmp_path: Path, ram_gb: float = 125.7) -> Path:
    path = tmp_path / "two-4090.json"
    path.write_text(json.dumps({"gpus": [{**GPU, "index": 0}, {**GPU, "index": 1}], "cpu_cores": 16,
                                "ram_total_gb": ram_gb, "ram_available_gb": ram_gb - 15.5, "disk_free_gb": 410.0}))
    return path


def plan_on_two(tmp_path, monkeypatch, model: str, gpus: str = "2", review: bool = False, ram_gb: float = 125.7):
    isolate(monkeypatch, tmp_path, hardware=two_gpus(tmp_path, ram_gb))

    async def drive():
        app = build_app(model=str(CONFIGS / model), dataset=str(DEMO_DATA), offer_resume=False, autosave=False)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            hardware = screen_text(app)
            app.screen.query_one("#num-gpus", Input).value = gpus
            await settle(pilot)
            summary = screen_text(app)
            app.goto("method", check=False)
            await settle(pilot)
            method = screen_text(app)
            if review:
                app.goto("review", check=False)
                await settle(pilot)
                method = (method, screen_text(app))
            return app.session, hardware, summary, method

    return asyncio.run(drive())


def test_two_gpus_listed_and_lora_goes_ddp(tmp_path, monkeypatch):
    session, hardware, summary, method = plan_on_two(tmp_path, monkeypatch, "llama-3.1-8b")
    assert "GPU 0" in hardware and "GPU 1" in hardware
    assert "2 × NVIDIA GeForce RTX 4090" in summary and "a GPU" in summary
    assert session.distributed.nproc_per_node == 2
    assert session.method == "lora" and session.distributed.strategy == "ddp", (session.method, session.distributed)
    assert session.distributed.cpu_offload is False
    assert "DDP over 2 GPUs" in method and "GB a GPU" in method
    assert session.training.per_device_train_batch_size * session.training.gradient_accumulation_steps * 2 == 16


def test_70b_on_two_gpus_is_qlora_with_fsdp_and_cpu_offload_on_peft(tmp_path, monkeypatch):
    """The plan needs FSDP's CPU offload on two 4090s, and the peft backend's load puts the 4-bit model in
    each process's RAM (Unsloth's would put it on each GPU): on a workstation's 125 GB of RAM, applying the
    plan sets QLoRA, turns distributed.cpu_offload on and pins the peft backend, and the review step says so."""
    session, _, _, (method, review) = plan_on_two(tmp_path, monkeypatch, "llama-3.1-70b", review=True)
    assert (session.method, session.distributed.strategy, session.distributed.nproc_per_node) == ("qlora", "fsdp", 2)
    assert "FSDP over 2 GPUs with CPU offload" in method
    assert session.distributed.cpu_offload is True and session.backend == "peft"
    assert "Processes 2 process(es) on this node, FSDP with CPU offload" in review


def test_70b_on_two_gpus_with_too_little_ram_to_load(tmp_path, monkeypatch):
    """64 GB of RAM cannot hold the 4-bit 70B in two processes while the peft backend loads it: nothing
    fits, and the step names the RAM it would need."""
    session, _, _, method = plan_on_two(tmp_path, monkeypatch, "llama-3.1-70b", ram_gb=64)
    assert "Nothing fits" in method and "GB of RAM" in method and session.distributed.strategy == "auto"


def test_more_gpus_than_the_machine_has_is_one_sentence(tmp_path, monkeypatch):
    session, _, summary, _ = plan_on_two(tmp_path, monkeypatch, "llama-3.1-8b", gpus="3")
    assert "This machine has 2 GPUs" in summary
    assert session.distributed.nproc_per_node == 1  # unchanged
