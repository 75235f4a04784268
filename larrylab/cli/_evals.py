"""`larrylab eval ...` and `larrylab gate ...`: run the PWS suite, decide the promotion gate.

Wired into the main CLI by `app.add_typer(eval_app, name="eval")` and
`app.command("gate")(gate_command)`. Heavy imports (inspect-ai) happen inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from larrylab.cli._kit import (
    DbOpt,
    JsonOpt,
    console,
    fail,
    guard,
    print_json,
    settings_from,
    writable_folder,
)

eval_app = typer.Typer(help="The inspect-ai PWS eval suite.", no_args_is_help=True)

TasksOpt = Annotated[
    str | None,
    typer.Option("--tasks", help="Comma-separated tasks (default: all seven categories)."),
]
JudgeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--judge", help="Judge registry model; repeat for several (median). Default: control."
    ),
]
RouteOpt = Annotated[
    str | None, typer.Option("--route", help="Route whose models are the defaults.")
]
LogDirOpt = Annotated[
    Path, typer.Option("--log-dir", help="Where inspect writes its logs (`inspect view`).")
]
LimitOpt = Annotated[
    int | None, typer.Option("--limit", min=1, help="Only the first N samples of each task.")
]


def _render_results(results: list[Any]) -> Table:
    table = Table("task", "n", "mean", "stderr", "95% CI", "errors", "log")
    for r in results:
        table.add_row(
            r.task,
            str(r.n_samples),
            f"{r.mean:.3f}",
            f"{r.stderr:.3f}",
            f"[{r.ci_low:.3f}, {r.ci_high:.3f}]",
            f"{r.metrics.get('errors', 0):g}",
            r.log_path or "",
        )
    return table


def _guarded(fn: Any) -> Any:
    """`guard`, plus the evals' own errors as sentences."""
    from larrylab.evals.evalset import EvalSetError
    from larrylab.evals.runner import EvalRunError

    def call() -> Any:
        try:
            return fn()
        except EvalSetError as exc:
            fail(str(exc))
        except EvalRunError as exc:
            fail(str(exc), code=1)

    return guard(call)


@eval_app.command("run")
def eval_run(
    model: Annotated[str, typer.Argument(help="Registry name of the model to evaluate.")],
    tasks: TasksOpt = None,
    judge: JudgeOpt = None,
    route: RouteOpt = None,
    log_dir: LogDirOpt = Path("logs"),
    limit: LimitOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the PWS eval suite on a registry model and store the scores."""
    from larrylab.evals.evalset import EVAL_SET_VERSION, eval_set_hash
    from larrylab.evals.runner import run_evals

    writable_folder(log_dir, "--log-dir")
    settings = settings_from(database_url)
    results = _guarded(
        lambda: run_evals(
            database_url=settings.database_url,
            model=model,
            tasks=tasks,
            judge=judge,
            log_dir=log_dir,
            limit=limit,
            route=route,
        )
    )
    digest = eval_set_hash()
    if as_json:
        print_json(
            {
                "model": model,
                "eval_set_hash": digest,
                "eval_set_version": EVAL_SET_VERSION,
                "log_dir": str(log_dir),
                "results": [r.model_dump(mode="json") for r in results],
            }
        )
        return
    out = console()
    out.print(f"[bold]{model}[/bold] on eval set {EVAL_SET_VERSION} ({digest[:12]})")
    out.print(_render_results(results))
    out.print(f"logs: inspect view --log-dir {log_dir}")


def gate_command(
    candidate: Annotated[str, typer.Argument(help="Registry name of the candidate model.")],
    baseline: Annotated[
        str | None,
        typer.Option("--baseline", help="Model to compare with (default: the route's model)."),
    ] = None,
    route: RouteOpt = None,
    judge: JudgeOpt = None,
    log_dir: LogDirOpt = Path("logs"),
    limit: LimitOpt = None,
    floor: Annotated[float, typer.Option(min=0, max=1, help="Minimum overall mean score.")] = 0.6,
    category_floor: Annotated[
        float, typer.Option(min=0, max=1, help="Minimum mean score of every category.")
    ] = 0.5,
    margin: Annotated[
        float, typer.Option(min=0, max=1, help="Non-inferiority margin on the paired difference.")
    ] = 0.05,
    rerun: Annotated[
        bool, typer.Option("--rerun", help="Run the evals again even if results are stored.")
    ] = False,
    actor: Annotated[str, typer.Option("--actor", help="Who decides, for the audit log.")] = (
        "larrylab gate"
    ),
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Gate a candidate: evals against the baseline on the same samples; exit 1 if refused."""
    from larrylab.evals.gate import GateConfig, run_gate

    settings = settings_from(database_url)
    config = guard(lambda: GateConfig(floor=floor, category_floor=category_floor, margin=margin))
    decision = _guarded(
        lambda: run_gate(
            database_url=settings.database_url,
            candidate=candidate,
            baseline=baseline,
            route=route,
            judge=judge,
            log_dir=log_dir,
            limit=limit,
            config=config,
            reuse=not rerun,
            actor=actor,
        )
    )
    if as_json:
        print_json(decision.model_dump(mode="json"))
    else:
        out = console()
        verdict = "[green]PASSED[/green]" if decision.passed else "[red]REFUSED[/red]"
        out.print(
            f"gate {verdict}: {candidate} against {decision.baseline} "
            f"on eval set {decision.eval_set_hash[:12]}"
        )
        for reason in decision.reasons:
            out.print(f"  - {reason}")
    if not decision.passed:
        raise typer.Exit(1)
