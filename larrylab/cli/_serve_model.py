"""`larrylab serve-model`: serve a Hugging Face model folder with `transformers serve`."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from larrylab.cli._kit import fail, port_option

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def default_name(folder: Path) -> str:
    """A registry name from the folder's name (characters outside [A-Za-z0-9._-] become -)."""
    name = "".join(c if c in _NAME_CHARS else "-" for c in folder.resolve().name).strip("-.")
    return name or "local-model"


def serve_model_command(
    folder: Annotated[Path, typer.Argument(help="Hugging Face model folder (save_pretrained).")],
    port: Annotated[int, port_option("Loopback port to serve on")] = 8600,
    name: Annotated[
        str | None, typer.Option(help="Model name for larrylab's config (default: the folder's).")
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for the model to load.")
    ] = 300.0,
    log_file: Annotated[
        Path | None, typer.Option(help="Where the server's output goes (default: a temp file).")
    ] = None,
) -> None:
    """Serve a model folder on loopback with `transformers serve` (OpenAI chat completions, CPU)
    and print the `models:` entry that puts it behind the router; Ctrl-C stops it."""
    from larrylab.serving import (
        ModelFolderError,
        ServeModelError,
        check_model_folder,
        start_model_server,
    )

    model_name = name or default_name(folder)
    if not model_name or set(model_name) - _NAME_CHARS:
        fail(f"--name {model_name!r}: use letters, digits, '.', '_' and '-'")
    try:
        check_model_folder(folder)
    except ModelFolderError as exc:
        fail(str(exc))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        typer.echo(f"loading {folder} with transformers serve (CPU) ...")
        try:
            server = start_model_server(folder, port, timeout=timeout, log_path=log_file)
        except ModelFolderError as exc:
            fail(str(exc))
        except ServeModelError as exc:
            fail(str(exc), code=1)
        with server:
            typer.echo(f"serving {server.model} at {server.base_url} (log: {server.log_path})")
            typer.echo("add to larrylab's config file, under models:")
            typer.echo(f"  {server.config_yaml(model_name)}")
            typer.echo("Ctrl-C stops it.", err=True)
            while not stop.is_set() and server.poll() is None:
                stop.wait(0.5)
            code = server.poll()
            if code is not None and not stop.is_set():
                fail(f"transformers serve exited with code {code} (log: {server.log_path})", 1)
        typer.echo("stopped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
