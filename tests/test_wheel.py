"""A wheel that works: built from the repository, installed into a fresh virtual environment, used
from a folder outside the repository, with its presets, GPU catalogue and demo data from the wheel.

The fresh environment reuses this venv's dependencies (torch, unsloth, textual ...) so it stays fast,
and must import the installed copy, never the checkout:
- `python -m venv --system-site-packages` from this venv would reach the *base* interpreter's
  packages, not this venv's; instead a `.pth` file in the new venv names this venv's site-packages
  as a plain path line. A path line adds the folder but does not run the `.pth` files inside it, so
  the editable install's finder (which maps `engine` and `tui` to the checkout) stays out.
- The new venv comes from the base interpreter (`sys._base_executable`) without pip; this venv's
  pip installs the wheel into it (`pip --python`) before the `.pth` exists, so it sees an empty
  environment; PYTHONPATH is cleared for every command, and they run from a folder outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["pyproject.toml", "setup.py", "README.md", "LICENSE", "engine", "tui", "presets", "data"]
DEMO_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

WIZARD = r"""
import asyncio, json
from tui.app import build_app

async def main():
    app = build_app(gpu="RTX 4090", offer_resume=False, autosave=False)
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(100):
            await pilot.pause(0.1)
            text = "\n".join(str(w.render()) for w in app.screen.query("Static"))
            if "RTX 4090" in text and "reading the GPU catalogue" not in text:
                break
        print(json.dumps({"step": app.current_step, "text": text}))

asyncio.run(main())
"""


def _clean_env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["LORA_TUI_STATE"] = str(tmp / "state")
    return env


def _run(command: list, cwd: Path, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """Build the wheel from a copy of the sources, install it into a fresh venv; the paths to use it."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = _clean_env(tmp)
    source = tmp / "source"  # a copy: building writes build/ and *.egg-info, not in the shared checkout
    source.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        path = ROOT / name
        (shutil.copytree(path, source / name, ignore=skip) if path.is_dir() else shutil.copy2(path, source / name))
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", dist, source], tmp, env)
    (wheel,) = dist.glob("lora_tui-*.whl")

    venv = tmp / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    _run([base_python, "-m", "venv", "--without-pip", venv], tmp, env)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel], tmp, env)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp, env).stdout.strip())
    (site / "_lora_tui_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")

    outside = tmp / "elsewhere"  # no engine/, tui/ or presets/ here: only the installed copy can answer
    outside.mkdir()
    return {"wheel": wheel, "venv": venv, "python": python, "lora_tui": venv / "bin" / "lora-tui", "site": site,
            "cwd": outside, "env": env}


def test_the_wheel_carries_presets_and_demo_data_and_no_scripts(installed):
    import zipfile

    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    for name in ("engine/_resources/presets/gpus.json", "engine/_resources/presets/hyperparameters.json",
                 "engine/_resources/data/demo/extract_contacts.jsonl", "tui/styles/app.tcss", "tui/cli.py", "tui/serve.py"):
        assert name in names, name
    assert not [n for n in names if n.startswith("engine/_resources/") and n.endswith(".py")]
    # every package of the checkout is in the wheel (setup.py finds them; none is listed by hand)
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "engine").rglob("__init__.py")}
    packages |= {str(p.parent.relative_to(ROOT)) for p in (ROOT / "tui").rglob("__init__.py")}
    assert {p for p in packages if f"{p}/__init__.py" not in names} == set()
    metadata = zipfile.ZipFile(installed["wheel"]).read("lora_tui-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata


def test_the_fresh_venv_imports_the_installed_copy_and_its_data(installed):
    code = ("import json, engine, tui, engine.paths as p, sys; print(json.dumps({'engine': engine.__file__, 'tui': tui.__file__, "
            "'root': str(p.PROJECT_ROOT), 'presets': str(p.PRESETS_DIR), 'demo': str(p.DEMO_DATA_DIR), "
            "'finder': [m for m in sys.modules if 'editable' in m]}))")
    found = json.loads(_run([installed["python"], "-c", code], installed["cwd"], installed["env"]).stdout)
    site = str(installed["site"])
    assert found["engine"].startswith(site) and found["tui"].startswith(site), found
    assert found["finder"] == []
    assert found["root"] == str(installed["site"] / "engine" / "_resources")  # never site-packages itself
    assert (Path(found["presets"]) / "gpus.json").is_file() and (Path(found["demo"]) / "extract_contacts.jsonl").is_file()
    presets = _run([installed["python"], "-c", "from engine.session.edits import load_presets; print(sorted(load_presets()))"],
                   installed["cwd"], installed["env"]).stdout
    assert "conservative" in presets


def test_version_plan_and_replay_dry_run_from_a_folder_outside_the_repository(installed):
    """`plan` on a config folder (GPU catalogue from the wheel) and `--replay --dry-run` of the demo
    session (demo data from the wheel), side by side: each spends most of its time importing."""
    from engine.models import locate_config

    cwd, env, lora_tui = installed["cwd"], installed["env"], installed["lora_tui"]
    version = _run([lora_tui, "--version"], cwd, env).stdout
    assert version.strip() == "lora-tui 0.1.0"

    model = cwd / "smollm2-135m"
    shutil.copytree(ROOT / "tests" / "configs" / "smollm2-135m", model, dirs_exist_ok=True)
    commands = {"plan": [lora_tui, "plan", "--model", model.name, "--gpu", "RTX 4090", "--json"]}
    if locate_config(DEMO_MODEL) is not None:
        demo = _run([installed["python"], "-c", "from engine.paths import DEMO_DATA_DIR; print(DEMO_DATA_DIR / 'extract_contacts.jsonl')"],
                    cwd, env).stdout.strip()
        assert demo.startswith(str(installed["site"]))
        session = cwd / "demo.json"
        session.write_text(json.dumps({"version": 1, "model": {"name": DEMO_MODEL, "max_seq_length": 256}, "method": "lora",
                                       "dataset": {"path": demo}, "output": {"dir": "runs/demo"}}))
        commands["dry-run"] = [lora_tui, "--replay", session.name, "--dry-run"]
    running = {name: subprocess.Popen([str(part) for part in command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for name, command in commands.items()}
    done = {name: process.communicate(timeout=300) for name, process in running.items()}
    for name, process in running.items():
        assert process.returncode == 0, f"{name} exited {process.returncode}: {done[name][1][-3000:]}"

    report = json.loads(done["plan"][0])
    assert report["model"]["architecture"] == "LlamaForCausalLM" and report["model"]["params"] > 100_000_000
    assert "RTX 4090" in json.dumps(report)  # the GPU catalogue, read from the wheel
    if "dry-run" not in done:
        pytest.skip("the demo model is not cached, so no --replay --dry-run: make setup caches it")
    out = done["dry-run"][0]
    assert "Dry run OK" in out and "400 in the file" in out and str(installed["site"]) in out, out[-2000:]


def test_the_wizard_starts_from_the_wheel_with_its_styles_and_gpu_catalogue(installed):
    env = dict(installed["env"], LORA_TUI_HARDWARE=str(ROOT / "tests" / "hardware" / "cpu_only.json"))
    result = _run([installed["python"], "-c", WIZARD], installed["cwd"], env)
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert shown["step"] == "hardware" and "RTX 4090" in shown["text"], shown["text"]
