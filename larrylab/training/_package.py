"""Package a trained model for Ollama: a Modelfile, and optionally the model itself.

Ollama 0.34.1 and later refuse LoRA adapters ("LoRA adapters are no longer supported"), so
when the training run saved a merged model (`train --merge`; its run.json names `merged_dir`)
the Modelfile says `FROM` that merged folder with no `ADAPTER`. Otherwise, or when asked
(`merged=False`), it says `FROM` the base the adapter was trained on (an Ollama model name for
a known hub base, or the base's local folder) and `ADAPTER` the adapter folder, and the plan
carries a note that current Ollama refuses it. Either way the prompt `TEMPLATE` is the format
the training chat template wrote, with Larry's `SYSTEM` prompt and the stop tokens. With an
Ollama host the model is created through the `ollama` Python client (`create_blob` for each
file, then `create`); without one the exact `ollama create` command is printed.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from larrylab.training._chat_templates import detect_family
from larrylab.training._data import sha256_file

DEFAULT_OLLAMA_PORT = 11434
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-:/")

# Ollama library tags holding the same (unquantised) weights as these hub models.
OLLAMA_BASES = {
    "meta-llama/Llama-3.2-1B-Instruct": "llama3.2:1b-instruct-fp16",
    "meta-llama/Llama-3.2-3B-Instruct": "llama3.2:3b-instruct-fp16",
    "meta-llama/Llama-3.1-8B-Instruct": "llama3.1:8b-instruct-fp16",
    "meta-llama/Meta-Llama-3.1-8B-Instruct": "llama3.1:8b-instruct-fp16",
    "mistralai/Mistral-7B-Instruct-v0.3": "mistral:7b-instruct-v0.3-fp16",
}

LARRY_SYSTEM_PROMPT = """\
You are Larry, a workshop coach who teaches the PWS ("Problems Worth Solving") methodology.
Your job is to help people find and frame a problem worth solving before they fall in love with
a solution. Coach; do not lecture, and do not hand out answers.

How you coach:
- Ask one or two sharp questions at a time, then wait. Build on what the person actually said.
- Separate the problem from the solution. When someone describes an app or a product, ask who
  has the problem, when it happens, what they do about it today and what it costs them.
- Ask for evidence: how many people they spoke to, what those people said and did, how often
  the problem occurs. Treat opinions as hypotheses to test.
- Use the PWS tools when they fit, and name the tool you are using:
  - Trending to the Absurd (TTA): push a measurable trend to its extreme to expose problems
    that are small today and will grow.
  - Jobs to Be Done (JTBD): what progress is the customer trying to make, and what are they
    firing when they hire a new solution? Cover functional, emotional and social sides.
  - S-Curve analysis: where is the technology or market on its S-curve, and what does that
    mean for the problems and opportunities that come next?
  - Ackoff's DIKW hierarchy: check whether a claim rests on data, information, knowledge or
    wisdom, and what it would take to move it up a level.
  - Red Team challenges: argue against the team's favourite idea to find its weakest
    assumption.
- When someone is confused or stuck, say so kindly, restate the step in plain words and offer
  a small next action. Admit what you do not know.
- Be warm, direct and brief: a few sentences, plain language, no jargon without explanation.
"""

_CHATML_TEMPLATE = """\
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range .Messages }}{{ if ne .Role "system" }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}{{ end }}<|im_start|>assistant
"""

_LLAMA3_TEMPLATE = """\
{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range .Messages }}{{ if ne .Role "system" }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}{{ end }}<|start_header_id|>assistant<|end_header_id|>

"""

_LLAMA31_TEMPLATE = """\
<|start_header_id|>system<|end_header_id|>

Cutting Knowledge Date: December 2023

{{ if .System }}{{ .System }}{{ end }}<|eot_id|>
{{- range .Messages }}{{ if ne .Role "system" }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}{{ end }}<|start_header_id|>assistant<|end_header_id|>

"""

_MISTRAL_TEMPLATE = """\
{{- range $i, $_ := .Messages }}
{{- if eq .Role "user" }}[INST] {{ if and $.System (eq (len (slice $.Messages $i)) 1) }}\
{{ $.System }}

{{ end }}{{ .Content }}CLOSE
{{- else if eq .Role "assistant" }} {{ .Content }}</s>
{{- end }}
{{- end }}"""

STOP_TOKENS = {
    "chatml": ["<|im_start|>", "<|im_end|>"],
    "llama3": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "mistral": ["[INST]", "[/INST]", "</s>"],
}


class PackagingError(Exception):
    """Packaging cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class PackagePlan:
    """Everything a Modelfile (or an Ollama create request) needs."""

    name: str
    base: str
    base_is_dir: bool
    adapter_dir: Path | None
    family: str
    template: str
    system: str
    parameters: dict[str, Any] = field(default_factory=dict)
    registry_name: str | None = None
    merged_available: bool = False
    note: str | None = None


def ollama_template(family: str, chat_template: str = "") -> str:
    """The Go prompt template that writes what the training chat template wrote."""
    if family == "chatml":
        return _CHATML_TEMPLATE
    if family == "llama3":
        return _LLAMA31_TEMPLATE if "Cutting Knowledge Date" in chat_template else _LLAMA3_TEMPLATE
    if family == "mistral":
        close = " [/INST]" if " [/INST]'" in chat_template else "[/INST]"
        return _MISTRAL_TEMPLATE.replace("CLOSE", close)
    raise PackagingError(f"no Ollama template for chat format {family!r}")


def check_name(name: str) -> str:
    """`name` if Ollama accepts it as a model name, else PackagingError."""
    if not name or name[0] in "._-:/" or not set(name.lower()) <= _NAME_CHARS:
        raise PackagingError(
            f"{name!r} is not a valid Ollama model name: use letters, digits and . _ - : /"
        )
    return name


def read_run(adapter_dir: Path) -> dict[str, Any]:
    """The training run's record (run.json next to or inside the adapter folder), or {}."""
    for path in (adapter_dir / "run.json", adapter_dir.parent / "run.json"):
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise PackagingError(f"{path} is not valid JSON: {exc}") from exc
            return data if isinstance(data, dict) else {}
    return {}


def _adapter_base(adapter_dir: Path) -> str | None:
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    base = config.get("base_model_name_or_path")
    return base if isinstance(base, str) and base else None


def _resolve_from(adapter_dir: Path, run: dict[str, Any], base: str | None) -> tuple[str, bool]:
    if base is None:
        trained_on = run.get("base_model") or _adapter_base(adapter_dir)
        if not trained_on:
            raise PackagingError(
                f"cannot tell which base {adapter_dir} was trained on: pass --base"
            )
        if trained_on in OLLAMA_BASES:
            return OLLAMA_BASES[trained_on], False
        local = Path(run.get("base_dir") or trained_on)
        if not (local / "config.json").is_file():
            raise PackagingError(
                f"the base {trained_on!r} has no known Ollama name and no local folder here: "
                "pass --base with an Ollama model name or the base model's folder"
            )
        return str(local.resolve()), True
    path = Path(base).expanduser()
    if path.is_dir():
        return str(path.resolve()), True
    return base, False


def _chat_template_text(folder: Path) -> str:
    path = folder / "chat_template.jinja"
    if path.is_file():
        return path.read_text()
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return ""
    template = config.get("chat_template")
    return template if isinstance(template, str) else ""


def run_merged_dir(run: dict[str, Any]) -> Path | None:
    """The merged model the training run saved (run.json's `merged_dir`), if its weights exist."""
    folder = run.get("merged_dir")
    if not isinstance(folder, str) or not folder:
        return None
    path = Path(folder)
    return path if any(path.glob("model*.safetensors")) else None


def adapter_note(merged_available: bool) -> str:
    """Why a Modelfile with ADAPTER will not load on current Ollama, and what to do instead."""
    if merged_available:
        return (
            "the Modelfile uses ADAPTER, as asked with --as-adapter: Ollama 0.34.1 and later "
            "refuse it; package without --as-adapter to use the run's merged model"
        )
    return (
        "this run has no merged model, so the Modelfile uses ADAPTER, which Ollama 0.34.1 and "
        "later refuse; for them, train again with `larrylab pipeline train --merge` and "
        "package that run (FROM its merged model, no ADAPTER)"
    )


def package_hint(adapter_dir: Path, name: str, *, merged: bool) -> str:
    """The `larrylab pipeline package` command to run after training, and what it will write."""
    command = shlex.join(
        ["larrylab", "pipeline", "package", "--adapter", str(adapter_dir), "--name", name]
    )
    if merged:
        return f"{command}  (FROM the merged model, no ADAPTER: what Ollama >= 0.34.1 needs)"
    return (
        f"{command}  (FROM the base with ADAPTER: Ollama >= 0.34.1 refuses it; "
        "train with --merge for those versions)"
    )


def _merged_from(adapter_dir: Path, run: dict[str, Any], base: str | None) -> str:
    folder = Path(base) if base else run_merged_dir(run) or adapter_dir.parent / "merged"
    if not any(folder.glob("model*.safetensors")):
        raise PackagingError(
            f"no merged model in {folder}: train with --merge, pass --base with the merged "
            "model's folder, or package with --as-adapter (FROM the base with ADAPTER)"
        )
    return str(folder.resolve())


def plan_package(
    adapter_dir: Path,
    name: str,
    *,
    base: str | None = None,
    merged: bool | None = None,
    system: str | None = None,
) -> PackagePlan:
    """Decide FROM, ADAPTER, TEMPLATE, SYSTEM and PARAMETERs for `adapter_dir`.

    `merged=None` (the default) packages the run's merged model when it has one, and the
    adapter otherwise; True insists on a merged model, False on the adapter. `base` overrides
    FROM: the merged model's folder, or for the adapter an Ollama model name or a base folder.
    """
    check_name(name)
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise PackagingError(f"{adapter_dir} has no adapter_model.safetensors")
    run = read_run(adapter_dir)
    merged_available = run_merged_dir(run) is not None
    if merged is None:
        merged = merged_available
    note = None
    if merged:
        from_, is_dir, adapter = _merged_from(adapter_dir, run, base), True, None
    else:
        from_, is_dir = _resolve_from(adapter_dir, run, base)
        adapter = adapter_dir.resolve()
        note = adapter_note(merged_available)
    chat_template = _chat_template_text(adapter_dir)
    family = run.get("chat_family") or detect_family(chat_template)
    if family not in STOP_TOKENS:
        raise PackagingError(f"cannot tell the chat format of {adapter_dir} (its chat template)")
    return PackagePlan(
        name=name,
        base=from_,
        base_is_dir=is_dir,
        adapter_dir=adapter,
        family=family,
        template=ollama_template(family, chat_template),
        system=system or run.get("system_prompt") or LARRY_SYSTEM_PROMPT,
        parameters={"stop": STOP_TOKENS[family], "temperature": 0.7, "num_ctx": 4096},
        registry_name=run.get("registered_name"),
        merged_available=merged_available,
        note=note,
    )


def _quote(text: str, what: str) -> str:
    if '"""' in text:
        raise PackagingError(f'the {what} contains """, which a Modelfile cannot hold')
    return f'"""{text}"""'


def modelfile_text(plan: PackagePlan) -> str:
    """The Modelfile for `plan`."""
    lines = [f"# larrylab: {plan.name} ({plan.family} prompt format)", f"FROM {plan.base}"]
    if plan.adapter_dir is not None:
        lines.append(f"ADAPTER {plan.adapter_dir}")
    lines.append(f"TEMPLATE {_quote(plan.template, 'template')}")
    lines.append(f"SYSTEM {_quote(plan.system, 'system prompt')}")
    for key, value in plan.parameters.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"PARAMETER {key} {json.dumps(item) if key == 'stop' else item}")
    return "\n".join(lines) + "\n"


def create_command(modelfile: Path, name: str) -> str:
    """The shell command that creates the model from the Modelfile."""
    return shlex.join(["ollama", "create", name, "-f", str(modelfile)])


def normalize_host(host: str) -> str:
    """`host` as a base URL with scheme and port (Ollama's defaults: http, 11434)."""
    raw = host.strip().rstrip("/")
    if "://" not in raw:
        raw = f"http://{raw}"
    parts = urlsplit(raw)
    if not parts.hostname:
        raise PackagingError(f"{host!r} is not an Ollama host (expected http://HOST:PORT)")
    netloc = parts.netloc if parts.port else f"{parts.netloc}:{DEFAULT_OLLAMA_PORT}"
    return f"{parts.scheme}://{netloc}{parts.path}"


def model_files(folder: Path) -> list[Path]:
    """The files of a model folder Ollama imports: weights, JSON configs, tokenizer."""
    files = sorted(folder.glob("model*.safetensors"))
    if not files:
        raise PackagingError(f"{folder} has no model*.safetensors to import")
    files += sorted(folder.glob("*.json"))
    files += [p for p in (folder / "tokenizer.model",) if p.is_file()]
    return files


def _upload(client: Any, http: Any, paths: list[Path]) -> dict[str, str]:
    """Upload each file as a blob (skipping blobs the server has); {file name: digest}."""
    digests = {}
    for path in paths:
        digest = f"sha256:{sha256_file(path)}"
        exists = http.head(f"/api/blobs/{digest}").status_code == 200
        if not exists and client.create_blob(path) != digest:
            raise PackagingError(f"{path} changed while it was being uploaded")
        digests[path.name] = digest
    return digests


def create_on_ollama(plan: PackagePlan, host: str) -> dict[str, Any]:
    """Create the model on the Ollama server at `host`; return what was sent."""
    import httpx
    import ollama

    base_url = normalize_host(host)
    client = ollama.Client(host=base_url)
    refused = "no longer supported"
    try:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            files = (
                _upload(client, http, model_files(Path(plan.base))) if plan.base_is_dir else None
            )
            adapters = (
                _upload(client, http, [plan.adapter_dir / f for f in ADAPTER_FILES])
                if plan.adapter_dir is not None
                else None
            )
        response = client.create(
            model=plan.name,
            from_=None if plan.base_is_dir else plan.base,
            files=files,
            adapters=adapters,
            template=plan.template,
            system=plan.system,
            parameters=plan.parameters,
            stream=False,
        )
    except ollama.ResponseError as exc:
        if refused in exc.error and plan.adapter_dir is not None:
            instead = (
                "package without --as-adapter (FROM the run's merged model)"
                if plan.merged_available
                else "train again with --merge and package that run (FROM its merged model)"
            )
            raise PackagingError(
                f"the Ollama server at {base_url} refuses LoRA adapters ({exc.error}); {instead}"
            ) from exc
        raise PackagingError(
            f"Ollama at {base_url} answered {exc.status_code}: {exc.error}"
        ) from exc
    except (ConnectionError, httpx.HTTPError) as exc:
        raise PackagingError(f"cannot reach Ollama at {base_url}: {exc}") from exc
    if response.status != "success":
        raise PackagingError(f"Ollama at {base_url} did not finish: status {response.status!r}")
    return {"host": base_url, "files": files, "adapters": adapters, "status": response.status}


def serving_info(plan: PackagePlan, host: str) -> dict[str, Any]:
    """How the router reaches the packaged model: Ollama's OpenAI-compatible API."""
    base_url = normalize_host(host)
    return {
        "provider": "ollama",
        "api": "openai",
        "base_url": f"{base_url}/v1",
        "model": plan.name,
        "ollama_from": plan.base,
        "mode": "adapter" if plan.adapter_dir is not None else "merged",
        "packaged": True,
    }
