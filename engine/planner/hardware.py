"""The machine we train on: GPUs through NVML, CPU cores, RAM and free disk through psutil.

No NVML library, no driver and no GPU are all normal: the result is a CPU-only profile, never an
exception. Sizes are GiB (what nvidia-smi's MiB divided by 1024 gives), named `_gb` for brevity.

The one seam for tests, screenshots and demos: when `LORA_TUI_HARDWARE` names a JSON file (as
written by `profile_to_dict`), `probe_hardware` returns that profile instead of probing. It is the
only place where a GPU may be faked.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.errors import UserError
from engine.paths import PRESETS_DIR

HARDWARE_ENV = "LORA_TUI_HARDWARE"
GIB = 1024**3


class _Checked(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GPUInfo(_Checked):
    """One GPU as NVML reports it (or as a profile file or the catalogue describes it)."""

    index: int = Field(0, ge=0, description="NVML's device index")
    name: str = Field(min_length=1, description='the GPU\'s name, e.g. "NVIDIA GeForce RTX 4090"')
    total_gb: float = Field(ge=0, description="total memory in GiB")
    free_gb: Optional[float] = Field(None, ge=0, description="free memory in GiB (default: total less used)")
    used_gb: float = Field(0.0, ge=0, description="memory in use in GiB")
    compute_capability: Optional[tuple[int, int]] = Field(None, description="[major, minor], e.g. [8, 9]")
    bf16: Optional[bool] = Field(None, description="bfloat16 support (default: compute capability 8.0 or newer)")
    driver: Optional[str] = Field(None, description="the NVIDIA driver's version")

    @model_validator(mode="after")
    def _defaults_from_the_rest(self):
        if self.free_gb is None:
            self.free_gb = max(self.total_gb - self.used_gb, 0.0)
        if self.bf16 is None:
            self.bf16 = self.compute_capability is not None and self.compute_capability >= (8, 0)
        return self


class HardwareProfile(_Checked):
    """The machine a run plans for: its GPUs, CPU cores, RAM and free disk."""

    gpus: list[GPUInfo] = Field(default_factory=list, description="every GPU NVML lists; empty on a CPU-only machine")
    cpu_cores: int = Field(1, ge=1, description="cores this process may use")
    ram_total_gb: float = Field(0.0, ge=0, description="RAM in GiB")
    ram_available_gb: Optional[float] = Field(None, ge=0, description="RAM available now in GiB (default: all of it)")
    disk_free_gb: float = Field(0.0, ge=0, description="free disk where the run folder goes, in GiB")
    source: str = Field("probe", description='"nvml", "probe" (no GPU found), "planned", or "file:PATH" (the seam)')

    @model_validator(mode="after")
    def _available_defaults_to_total(self):
        if self.ram_available_gb is None:
            self.ram_available_gb = self.ram_total_gb
        return self

    @property
    def cpu_only(self) -> bool:
        return not self.gpus

    @property
    def vram_gb(self) -> float | None:
        """Total memory of the first GPU (training uses one), or None on a CPU-only machine."""
        return self.gpus[0].total_gb if self.gpus else None

    @property
    def bf16(self) -> bool:
        """Whether training can use bfloat16: the first GPU supports it, or there is no GPU (CPU)."""
        return self.gpus[0].bf16 if self.gpus else True

    def summary(self) -> str:
        """One line, e.g. "NVIDIA GeForce RTX 4090 24.0 GB (23.1 free, bf16) · 16 cores · 62.7 GB RAM · 410 GB disk free"."""
        parts = []
        if self.gpus:
            first = self.gpus[0]
            traits = [f"{first.free_gb:.1f} free"] if self.source != "planned" else ["planned"]
            traits.append("bf16" if first.bf16 else "fp16 only")
            count = f"{len(self.gpus)} × " if len(self.gpus) > 1 else ""
            each = " each" if len(self.gpus) > 1 else ""
            parts.append(f"{count}{first.name} {first.total_gb:.1f} GB{each} ({', '.join(traits)})")
        else:
            parts.append("CPU only (no GPU found)")
        parts.append(f"{self.cpu_cores} CPU cores")
        if self.ram_total_gb:
            parts.append(f"{self.ram_total_gb:.1f} GB RAM ({self.ram_available_gb:.1f} available)")
        if self.disk_free_gb:
            parts.append(f"{self.disk_free_gb:.0f} GB disk free")
        return " · ".join(parts)


class GPUSpec(_Checked):
    """A GPU from the catalogue in presets/gpus.json, for planning on hardware you do not have."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description='the name people use, e.g. "RTX 4090"')
    vram_gb: float = Field(gt=0, description="memory as NVML reports it, in GiB")
    bf16: bool = Field(description="bfloat16 support: compute capability 8.0 (Ampere) or newer")
    compute_capability: Optional[tuple[int, int]] = Field(None, description="[major, minor]")
    peak_tflops: Optional[float] = Field(
        None, gt=0, description="data-sheet dense bf16 tensor TFLOPS with FP32 accumulate (fp16 without bf16): "
        "what the training-time estimate divides by")
    aliases: tuple[str, ...] = Field((), description="other spellings: NVML's name, marketing names")


class GPUCatalogue(_Checked):
    about: str = Field("", description="what the file is, for a person reading it")
    gpus: list[GPUSpec] = Field(min_length=1, description="the GPUs `--gpu NAME` knows")


def _explain(error: ValidationError, where: str) -> str:
    """The first problem of a profile or catalogue, as one sentence naming the field."""
    first = error.errors()[0]
    loc = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
    kind = first["type"]
    if kind == "missing":
        return f"`{loc}` is missing in the {where}."
    if kind == "extra_forbidden":
        return f"The {where} has unknown field `{loc}`."
    if "compute_capability" in loc:
        return f"`{loc.split('.compute_capability')[0]}.compute_capability` in the {where} must be [major, minor], e.g. [8, 9]."
    if kind in ("greater_than_equal", "greater_than"):
        return f"`{loc}` in the {where} must be a number of at least {first['ctx'].get('ge', first['ctx'].get('gt'))}, not {first['input']!r}."
    return f"`{loc}` in the {where}: {first['msg'].removeprefix('Input should be ').removeprefix('Value error, ')}."


def probe_hardware(disk_path: str | os.PathLike = ".") -> HardwareProfile:
    """The real machine (or the profile named by $LORA_TUI_HARDWARE). Never raises for a missing GPU."""
    seam = os.environ.get(HARDWARE_ENV)
    if seam:
        return load_profile(seam)
    profile = _host_profile(disk_path)
    profile.gpus = _nvml_gpus()
    profile.source = "nvml" if profile.gpus else "probe"
    return profile


def load_profile(path: str | os.PathLike) -> HardwareProfile:
    """Read a hardware profile JSON file (the seam); a bad file raises UserError naming it."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"${HARDWARE_ENV} names {path}, which cannot be read ({error.__class__.__name__}).") from error
    except json.JSONDecodeError as error:
        raise UserError(f"${HARDWARE_ENV} names {path}, which is not valid JSON (line {error.lineno}).") from error
    profile = profile_from_dict(data, where=str(path))
    profile.source = f"file:{path}"
    return profile


def profile_to_dict(profile: HardwareProfile) -> dict:
    return profile.model_dump(mode="json")


def profile_from_dict(data: dict, where: str = "hardware profile") -> HardwareProfile:
    """The inverse of `profile_to_dict`. Unknown fields and wrong types raise UserError naming the field."""
    if not isinstance(data, dict):
        raise UserError(f"The {where} must be a JSON object with `gpus`, `cpu_cores`, `ram_total_gb`, ...")
    try:
        return HardwareProfile.model_validate(data)
    except ValidationError as error:
        raise UserError(_explain(error, where)) from None


def _host_profile(disk_path) -> HardwareProfile:
    import psutil

    try:
        cores = len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    memory = psutil.virtual_memory()
    return HardwareProfile(
        gpus=[],
        cpu_cores=cores,
        ram_total_gb=round(memory.total / GIB, 2),
        ram_available_gb=round(memory.available / GIB, 2),
        disk_free_gb=round(_disk_free(disk_path) / GIB, 1),
    )


def _disk_free(disk_path) -> int:
    import psutil

    path = Path(disk_path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent  # the run folder may not exist yet: measure the disk it will be on
    try:
        return psutil.disk_usage(str(path)).free
    except OSError:
        return 0


def _nvml_gpus() -> list[GPUInfo]:
    """GPUs as NVML sees them; [] when NVML, its library, the driver or a GPU is missing."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: no usable GPU here
        return []
    gpus: list[GPUInfo] = []
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                capability = tuple(int(v) for v in pynvml.nvmlDeviceGetCudaComputeCapability(handle))
            except Exception:
                capability = None
            gpus.append(
                GPUInfo(
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    total_gb=round(memory.total / GIB, 2),
                    free_gb=round(memory.free / GIB, 2),
                    used_gb=round(memory.used / GIB, 2),
                    compute_capability=capability,
                    bf16=bool(capability and capability >= (8, 0)),  # Ampere and newer
                    driver=driver,
                )
            )
    except Exception:
        return gpus  # keep what was read before a device failed
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return gpus


def gpu_memory_used() -> list[tuple[float, float]]:
    """(used GiB, total GiB) for each GPU right now, for the training dashboard; [] without a GPU.

    Under the $LORA_TUI_HARDWARE seam it reports the profile's figures, so screenshots of a faked
    GPU show consistent numbers.
    """
    if os.environ.get(HARDWARE_ENV):
        try:
            return [(gpu.used_gb, gpu.total_gb) for gpu in probe_hardware().gpus]
        except UserError:
            return []
    return [(gpu.used_gb, gpu.total_gb) for gpu in _nvml_gpus()]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- planning for a GPU you do not have -----------------------------------------------------------


@lru_cache(maxsize=1)
def _catalogue() -> tuple[GPUSpec, ...]:
    path = PRESETS_DIR / "gpus.json"
    try:
        return tuple(GPUCatalogue.model_validate_json(path.read_bytes()).gpus)
    except OSError:
        raise UserError(f"{path}: the GPU catalogue is missing; reinstall lora-tui or restore presets/.") from None
    except ValidationError as error:
        raise UserError(_explain(error, f"GPU catalogue {path}")) from None


def load_gpu_catalogue() -> list[GPUSpec]:
    """The GPUs in presets/gpus.json: consumer cards, workstation cards and datacentre GPUs."""
    return list(_catalogue())


def _key(name: str) -> str:
    text = name.lower()
    text = re.sub(r"\b(nvidia|geforce|tesla|quadro)\b", " ", text)
    return re.sub(r"[^a-z0-9]", "", text)


def find_gpu(name: str) -> GPUSpec:
    """The catalogue entry for `name` ("RTX 4090", "a100-80gb", "NVIDIA H100 80GB HBM3"); else UserError."""
    wanted = _key(name)
    if not wanted:
        raise UserError("--gpu needs a GPU name, e.g. --gpu \"RTX 4090\"; `lora-tui plan --help` lists the catalogue.")
    catalogue = _catalogue()
    for spec in catalogue:
        if wanted == _key(spec.name) or wanted in (_key(alias) for alias in spec.aliases):
            return spec
    # A part of one name only is a match too ("4090"); a part of several is ambiguous ("A100").
    partial = [s for s in catalogue if wanted in _key(s.name) or any(wanted in _key(a) for a in s.aliases)]
    if len(partial) == 1:
        return partial[0]
    names = [spec.name for spec in catalogue]
    if len(partial) > 1:
        raise UserError(f"--gpu \"{name}\" could be {', '.join(s.name for s in partial[:6])}; give the full name.")
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.4) or difflib.get_close_matches(
        wanted, [_key(n) for n in names], n=4, cutoff=0.4
    )
    if close and close[0] not in names:
        close = [n for n in names if _key(n) in close]
    hint = f"close names: {', '.join(close)}" if close else "use --vram GB for a GPU that is not in the catalogue"
    raise UserError(f"--gpu \"{name}\" is not in the GPU catalogue ({hint}).")


def planned_hardware(
    gpu: str | None = None, vram_gb: float | None = None, base: HardwareProfile | None = None
) -> HardwareProfile:
    """A profile for a GPU you plan to use: a catalogue name, a VRAM size, or both (the size wins).

    CPU, RAM and disk come from `base` (the real machine) when given. With neither `gpu` nor
    `vram_gb`, `base` (or the probed machine) is returned unchanged.
    """
    if vram_gb is not None:
        if isinstance(vram_gb, bool) or not isinstance(vram_gb, (int, float)) or not vram_gb > 0 or vram_gb != vram_gb:
            shown = f"{vram_gb:g}" if isinstance(vram_gb, (int, float)) and not isinstance(vram_gb, bool) else repr(vram_gb)
            raise UserError(f"--vram must be a positive number of GB, e.g. --vram 24, not {shown}.")
        if vram_gb > 4096:
            raise UserError(f"--vram {vram_gb:g} GB is more than any GPU has; give the memory of one GPU in GB.")
    if gpu is None and vram_gb is None:
        return base if base is not None else probe_hardware()
    host = base if base is not None else _host_profile(".")
    if gpu is not None:
        spec = find_gpu(gpu)
        name, capability, bf16 = spec.name, spec.compute_capability, spec.bf16
        total = float(vram_gb) if vram_gb is not None else spec.vram_gb
    else:
        name, capability, bf16 = "GPU", None, True
        total = float(vram_gb)
    planned = GPUInfo(
        index=0, name=name, total_gb=total, free_gb=total, used_gb=0.0,
        compute_capability=capability, bf16=bf16, driver=None,
    )
    return HardwareProfile(
        gpus=[planned],
        cpu_cores=host.cpu_cores,
        ram_total_gb=host.ram_total_gb,
        ram_available_gb=host.ram_available_gb,
        disk_free_gb=host.disk_free_gb,
        source="planned",
    )
