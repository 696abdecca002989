"""llama.cpp, pinned, from a package registry: its converter and its Python bindings, fetched once.

The source distribution of `llama-cpp-python` on PyPI carries llama.cpp itself: the converter
`vendor/llama.cpp/convert_hf_to_gguf.py` with its `conversion/` package and `gguf-py/`. Two things
come from it, both cached under `~/.cache/lora-tui` so a clean clone pays for them once:

- the converter, unpacked to `llama.cpp/<version>/` (seconds; run with this environment's Python);
- the bindings (`import llama_cpp`): no prebuilt wheel is served, so pip compiles llama.cpp (cmake,
  a C++ compiler; about 7 minutes on 2 cores). The built wheel is kept in `wheels/`, and any later
  set-up (a fresh `.venv`, another clone) installs that file in seconds.

`make setup` runs `python -m engine.export.llama_cpp` (both steps); `lora-tui export` does the same
when they are missing, and says so first. Unsloth's own GGUF export clones llama.cpp from GitHub and
builds it at export time; this needs neither GitHub nor a build after set-up.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from engine.errors import UserError
from engine.paths import cache_dir

LLAMA_CPP_PYTHON = "0.3.36"
SDIST = f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
VENDOR = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
# What the converter needs from the source tree (2 MB of the 76 MB archive).
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")

Announce = Optional[Callable[[str], None]]


def wheels_dir() -> Path:
    return cache_dir() / "wheels"


def converter_dir() -> Path:
    return cache_dir() / "llama.cpp" / LLAMA_CPP_PYTHON


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def _last_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stderr or result.stdout or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit code {result.returncode}"


def sdist(announce: Announce = None) -> Path:
    """The pinned source distribution, downloaded once with pip."""
    path = wheels_dir() / SDIST
    if path.is_file():
        return path
    wheels_dir().mkdir(parents=True, exist_ok=True)
    if announce:
        announce(f"Fetching llama.cpp (llama-cpp-python {LLAMA_CPP_PYTHON} source from PyPI, 76 MB, once) ...")
    result = _pip("download", "--quiet", "--no-deps", "--no-binary", ":all:", f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
                  "-d", str(wheels_dir()))
    if result.returncode != 0 or not path.is_file():
        raise UserError(f"could not fetch llama-cpp-python {LLAMA_CPP_PYTHON} from PyPI ({_last_line(result)}); "
                        "GGUF export needs it once.")
    return path


def converter(announce: Announce = None) -> Path:
    """llama.cpp's convert_hf_to_gguf.py, unpacked once from the pinned source distribution."""
    target = converter_dir()
    script = target / "convert_hf_to_gguf.py"
    if script.is_file():
        return script
    archive = sdist(announce)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(archive) as tar:
        members = []
        for member in tar.getmembers():
            if not member.name.startswith(VENDOR) or not (member.isfile() or member.isdir()):
                continue
            inner = member.name[len(VENDOR):]
            if any(inner == part or (part.endswith("/") and inner.startswith(part)) for part in CONVERTER_PARTS):
                member.name = inner
                members.append(member)
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python 3.12, and 3.10/3.11 patch releases
        tar.extractall(partial, members=members, **safe)
    if not (partial / "convert_hf_to_gguf.py").is_file():
        raise UserError(f"{archive}: no vendor/llama.cpp/convert_hf_to_gguf.py inside; delete the file and try again.")
    if script.is_file():  # another process finished first
        shutil.rmtree(partial, ignore_errors=True)
    else:
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return script


def supported_architectures(script: Path) -> set[str]:
    """The Hugging Face architectures the converter registers (read from its source, nothing imported)."""
    names: set[str] = set()
    for source in [script, *sorted((script.parent / "conversion").glob("*.py"))]:
        for call in re.findall(r"ModelBase\.register\(([^)]*)\)", source.read_text(encoding="utf-8")):
            names.update(re.findall(r"[\"']([A-Za-z0-9_]+)[\"']", call))
    return names


def converter_env(script: Path) -> dict:
    """The converter's gguf-py, not the installed `gguf` package: the two must match."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    paths = [str(script.parent / "gguf-py"), str(script.parent)]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*paths, env.get("PYTHONPATH")]))
    return env


def bindings_version() -> Optional[str]:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


def cached_wheel() -> Optional[Path]:
    """The wheel built here before (`py3-none-<platform>`: the bindings use ctypes, any Python 3 reads them)."""
    import sysconfig

    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    found = sorted(wheels_dir().glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON}-*-{platform}.whl"))
    return found[-1] if found else None


def install_bindings(announce: Announce = None) -> None:
    """`import llama_cpp` at the pinned version: the cached wheel, else built once from the source distribution."""
    if bindings_version() == LLAMA_CPP_PYTHON:
        return
    wheel = cached_wheel()
    if wheel is None:
        archive = sdist(announce)
        if announce:
            announce(f"Building llama.cpp's Python bindings (llama-cpp-python {LLAMA_CPP_PYTHON}) from source, once: "
                     "about 7 minutes on 2 cores; the wheel is kept in " + str(wheels_dir()) + " ...")
        env = dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
        # The multimodal library (mtmd, a third of the build) is for image chat handlers, which the
        # export never uses; a person's own CMAKE_ARGS (a CUDA build, say) come first.
        env["CMAKE_ARGS"] = " ".join(filter(None, [env.get("CMAKE_ARGS"), "-DLLAVA_BUILD=OFF"]))
        result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(archive), "-w",
                                 str(wheels_dir())], capture_output=True, text=True, env=env)
        wheel = cached_wheel()
        if result.returncode != 0 or wheel is None:
            raise UserError(f"building llama-cpp-python {LLAMA_CPP_PYTHON} failed ({_last_line(result)}); it needs cmake "
                            "and a C++ compiler (apt-get install cmake g++).")
    if announce:
        announce(f"Installing {wheel.name} ...")
    result = _pip("install", "--quiet", str(wheel))
    if result.returncode != 0:
        raise UserError(f"installing {wheel} failed ({_last_line(result)}).")
    importlib.invalidate_caches()


def ensure(announce: Announce = None) -> Path:
    """Both: the converter's path, with the bindings installed."""
    script = converter(announce)
    install_bindings(announce)
    return script


def status() -> str:
    """One line for the finish screen: what GGUF export will find or have to fetch."""
    have_converter = (converter_dir() / "convert_hf_to_gguf.py").is_file()
    have_bindings = bindings_version() == LLAMA_CPP_PYTHON
    if have_converter and have_bindings:
        return f"GGUF export ready (llama.cpp from llama-cpp-python {LLAMA_CPP_PYTHON})."
    if have_bindings or cached_wheel():
        return f"GGUF export fetches llama.cpp's converter first (llama-cpp-python {LLAMA_CPP_PYTHON}, once, seconds)."
    return (f"GGUF export builds llama.cpp first (llama-cpp-python {LLAMA_CPP_PYTHON}, once: about 7 minutes on 2 cores; "
            "`make setup` does it ahead).")


def main(argv=None) -> int:
    """`python -m engine.export.llama_cpp`: fetch the converter and install the bindings (make setup)."""
    try:
        script = ensure(announce=lambda text: print(text, flush=True))
    except UserError as error:
        print(f"llama.cpp set-up: {error}", file=sys.stderr)
        return 2
    print(f"llama.cpp ready: converter {script}, llama-cpp-python {bindings_version()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
