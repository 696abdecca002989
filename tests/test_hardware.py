"""The hardware probe: CPU-only without NVML, the LORA_TUI_HARDWARE seam, the GPU catalogue, planned GPUs."""

from __future__ import annotations

import json
import sys

import pytest

from engine.errors import UserError
from engine.planner.hardware import (
    HARDWARE_ENV,
    GPUInfo,
    HardwareProfile,
    find_gpu,
    gpu_memory_used,
    load_gpu_catalogue,
    planned_hardware,
    probe_hardware,
    profile_from_dict,
    profile_to_dict,
)

A100 = {
    "gpus": [
        {"index": 0, "name": "NVIDIA A100-SXM4-80GB", "total_gb": 80.0, "free_gb": 79.2, "used_gb": 0.8,
         "compute_capability": [8, 0], "bf16": True, "driver": "550.54.15"},
        {"index": 1, "name": "NVIDIA A100-SXM4-80GB", "total_gb": 80.0, "free_gb": 80.0, "used_gb": 0.0,
         "compute_capability": [8, 0], "bf16": True, "driver": "550.54.15"},
    ],
    "cpu_cores": 32, "ram_total_gb": 503.0, "ram_available_gb": 480.5, "disk_free_gb": 1800.0,
}


@pytest.fixture
def no_seam(monkeypatch):
    monkeypatch.delenv(HARDWARE_ENV, raising=False)


def test_without_nvml_the_probe_is_cpu_only(no_seam, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` now fails as if not installed
    profile = probe_hardware()
    assert profile.cpu_only and profile.gpus == [] and profile.vram_gb is None
    assert profile.cpu_cores >= 1 and profile.ram_total_gb > 0 and profile.disk_free_gb > 0
    assert profile.summary().startswith("CPU only")
    assert gpu_memory_used() == []


def test_probe_on_this_machine_never_raises(no_seam, tmp_path):
    profile = probe_hardware(tmp_path / "not" / "made" / "yet")  # a run folder that does not exist yet
    assert isinstance(profile, HardwareProfile)
    assert profile.source in ("nvml", "probe")
    assert profile.disk_free_gb > 0
    for gpu in profile.gpus:  # on a GPU machine: real figures
        assert gpu.total_gb > 0 and gpu.name


def test_nvml_binding_has_the_calls_the_probe_uses():
    import pynvml

    for call in ("nvmlInit", "nvmlShutdown", "nvmlSystemGetDriverVersion", "nvmlDeviceGetCount",
                 "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetName",
                 "nvmlDeviceGetCudaComputeCapability"):
        assert callable(getattr(pynvml, call)), call


def test_seam_returns_the_profile_in_the_file(monkeypatch, tmp_path):
    path = tmp_path / "a100.json"
    path.write_text(json.dumps(A100))
    monkeypatch.setenv(HARDWARE_ENV, str(path))
    profile = probe_hardware()
    assert profile.source == f"file:{path}"
    assert not profile.cpu_only and profile.vram_gb == 80.0 and len(profile.gpus) == 2
    assert profile.gpus[0].compute_capability == (8, 0) and profile.gpus[0].bf16
    assert "2 × NVIDIA A100-SXM4-80GB 80.0 GB each" in profile.summary()
    assert gpu_memory_used() == [(0.8, 80.0), (0.0, 80.0)]


def test_profile_round_trip():
    profile = profile_from_dict(A100)
    again = profile_from_dict(json.loads(json.dumps(profile_to_dict(profile))))
    assert again == profile


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"gpus": [{"name": "X"}]}), r"gpus\[0\]\.total_gb` is missing"),
        (json.dumps({"gpus": [{"name": "X", "total_gb": -1}]}), "at least 0"),
        (json.dumps({"gpu": []}), "unknown field `gpu`"),
        (json.dumps({"gpus": [{"name": "X", "total_gb": 8, "compute_capability": "8.6"}]}), r"\[major, minor\]"),
    ],
)
def test_bad_seam_file_is_one_sentence_naming_it(monkeypatch, tmp_path, content, message):
    path = tmp_path / "hw.json"
    path.write_text(content)
    monkeypatch.setenv(HARDWARE_ENV, str(path))
    with pytest.raises(UserError, match=message):
        probe_hardware()


def test_catalogue_covers_consumer_and_datacentre_gpus():
    catalogue = {spec.name: spec for spec in load_gpu_catalogue()}
    for name in ("RTX 3060", "RTX 4090", "RTX 5090", "T4", "L4", "A10G", "A100 40GB", "A100 80GB", "H100 80GB", "H200"):
        assert name in catalogue, name
    assert any(8 <= spec.vram_gb <= 32 for spec in catalogue.values())
    assert catalogue["T4"].bf16 is False and catalogue["RTX 4090"].bf16 is True
    assert catalogue["A100 80GB"].compute_capability == (8, 0)


@pytest.mark.parametrize(
    "query, name",
    [("RTX 4090", "RTX 4090"), ("4090", "RTX 4090"), ("NVIDIA GeForce RTX 4090", "RTX 4090"),
     ("Tesla T4", "T4"), ("a10g", "A10G"), ("A100-SXM4-80GB", "A100 80GB"), ("NVIDIA H100 80GB HBM3", "H100 80GB")],
)
def test_find_gpu_by_common_spellings(query, name):
    assert find_gpu(query).name == name


def test_unknown_or_ambiguous_gpu_lists_close_names():
    with pytest.raises(UserError, match="close names: RTX 5090"):
        find_gpu("RTX 9090")
    with pytest.raises(UserError, match="A100 40GB, A100 80GB"):
        find_gpu("A100")


def test_planned_hardware_from_catalogue_or_size():
    base = profile_from_dict(A100)
    planned = planned_hardware("RTX 4090", None, base)
    assert planned.source == "planned" and planned.vram_gb == 24.0 and planned.gpus[0].bf16
    assert planned.cpu_cores == 32 and planned.ram_total_gb == 503.0  # the rest is this machine
    sized = planned_hardware(None, 12, base)
    assert sized.vram_gb == 12.0 and sized.gpus[0].compute_capability is None
    assert planned_hardware("T4", 16, base).vram_gb == 16.0  # an explicit size wins
    assert planned_hardware(None, None, base) is base


@pytest.mark.parametrize("bad", [-3, 0, float("nan"), 10_000])
def test_planned_hardware_rejects_bad_sizes(bad):
    with pytest.raises(UserError, match="--vram"):
        planned_hardware(None, bad, HardwareProfile())


def test_summary_of_a_fp16_only_gpu():
    profile = HardwareProfile(gpus=[GPUInfo(index=0, name="Tesla T4", total_gb=15.0, free_gb=14.6, used_gb=0.4, compute_capability=(7, 5), bf16=False, driver="535")], cpu_cores=4,
                              ram_total_gb=15.6, ram_available_gb=12.0, disk_free_gb=50)
    assert "fp16 only" in profile.summary() and "Tesla T4 15.0 GB" in profile.summary()
    assert profile.bf16 is False
