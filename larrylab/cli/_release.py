"""Commands of the release side: model history, promotion, rollback and rollouts."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from larrylab.cli._kit import DbOpt, JsonOpt, console, guard, open_session, print_json

ActorOpt = Annotated[str, typer.Option("--actor", help="Who is acting, for the audit log.")]
rollout_app = typer.Typer(
    help="Guarded rollouts: list them, or check them now.", no_args_is_help=True
)


def models_show(name: str, database_url: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Show a model: how it is served, its lineage, evals, gate decision and history."""
    from larrylab.release import (
        get_model,
        latest_eval_results,
        latest_gate_decision,
        list_model_events,
    )

    with open_session(database_url) as session:
        model = guard(lambda: get_model(session=session, name=name))
        evals = latest_eval_results(session=session, model=name)
        gate = latest_gate_decision(session=session, candidate=name)
        events = list_model_events(session=session, name=name)
    if as_json:
        print_json(
            {
                "model": model.model_dump(mode="json"),
                "evals": [e.model_dump(mode="json", exclude={"sample_scores"}) for e in evals],
                "gate": gate.model_dump(mode="json") if gate else None,
                "events": [e.model_dump(mode="json") for e in events],
            }
        )
        return
    out = console()
    target = model.litellm_model or f"{model.base_url} ({model.model})"
    out.print(f"[bold]{model.name}[/bold]  state {model.state}  served by {model.api}: {target}")
    for key, value in model.lineage.items():
        out.print(f"  {key}: {value}")
    if evals:
        table = Table("task", "n", "mean", "95% CI", "judge")
        for e in evals:
            table.add_row(
                e.task,
                str(e.n_samples),
                f"{e.mean:.3f}",
                f"[{e.ci_low:.3f}, {e.ci_high:.3f}]",
                e.judge or "",
            )
        out.print(table)
    if gate:
        verdict = "[green]passed[/green]" if gate.passed else "[red]failed[/red]"
        out.print(f"gate {verdict} against {gate.baseline} on eval set {gate.eval_set_hash[:12]}")
        for reason in gate.reasons:
            out.print(f"  - {reason}")
    history = Table("when", "change", "actor", "reason")
    for ev in events:
        change = f"{ev.from_state or ''} -> {ev.to_state}" if ev.to_state else ev.action
        history.add_row(ev.created_at.strftime("%Y-%m-%d %H:%M:%S"), change, ev.actor, ev.reason)
    out.print(history)


def models_retire(
    name: str,
    reason: Annotated[str, typer.Option("--reason", help="Why it is retired.")],
    actor: ActorOpt = "cli",
    database_url: DbOpt = None,
) -> None:
    """Retire a model (it stays in the registry with its history)."""
    from larrylab.release import transition_model

    with open_session(database_url) as session:
        guard(
            lambda: transition_model(
                session=session, name=name, to_state="retired", actor=actor, reason=reason
            )
        )
    typer.echo(f"retired {name}")


def promote_command(
    candidate: str,
    route: Annotated[str, typer.Option("--route", help="The route to promote it on.")],
    canary: Annotated[
        float, typer.Option("--canary", min=0.1, max=99.9, help="Canary weight, percent.")
    ] = 10.0,
    actor: ActorOpt = "cli",
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a guarded canary of a gated model; refused unless it passed the gate."""
    from larrylab.cli._kit import settings_from
    from larrylab.release import policy_from_settings, promote

    policy = policy_from_settings(settings_from(database_url))
    with open_session(database_url) as session:
        rollout = guard(
            lambda: promote(
                session=session,
                candidate=candidate,
                route=route,
                canary_weight=canary,
                actor=actor,
                policy=policy,
            )
        )
    if as_json:
        print_json(rollout.model_dump(mode="json"))
        return
    steps = " -> ".join(f"{s:g}%" for s in rollout.steps)
    typer.echo(
        f"canary started: {candidate} at {rollout.weight:g}% of route {route} against "
        f"{rollout.baseline} (experiment {rollout.experiment}); ramps {steps} while guardrails hold"
    )


def rollback_command(
    route: str,
    reason: Annotated[
        str, typer.Option("--reason", help="Why, for the audit log.")
    ] = "manual rollback",
    actor: ActorOpt = "cli",
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """End a route's canary, or undo its last completed promotion."""
    from larrylab.release import rollback

    with open_session(database_url) as session:
        rollout = guard(lambda: rollback(session=session, route=route, actor=actor, reason=reason))
    if as_json:
        print_json(rollout.model_dump(mode="json"))
        return
    typer.echo(f"rolled back {rollout.candidate} on route {route}; {rollout.baseline} serves it")


@rollout_app.command("list")
def rollout_list(
    route: Annotated[str | None, typer.Option("--route")] = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List rollouts, newest first."""
    from larrylab.release import list_rollouts

    with open_session(database_url) as session:
        items = guard(lambda: list_rollouts(session=session, route=route))
    if as_json:
        print_json({"data": [r.model_dump(mode="json") for r in items], "count": len(items)})
        return
    table = Table("id", "route", "candidate", "baseline", "status", "weight", "started")
    for r in items:
        table.add_row(
            str(r.id),
            r.route,
            r.candidate,
            r.baseline,
            r.status,
            f"{r.weight:g}%",
            r.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console().print(table)


@rollout_app.command("tick")
def rollout_tick(database_url: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Check every active rollout now: ramp, hold, complete or roll back."""
    from larrylab.cli._kit import settings_from
    from larrylab.release import advance_rollouts, policy_from_settings

    policy = policy_from_settings(settings_from(database_url))
    with open_session(database_url) as session:
        checks = guard(lambda: advance_rollouts(session=session, policy=policy))
    if as_json:
        print_json([c.model_dump(mode="json") for c in checks])
        return
    if not checks:
        typer.echo("no active rollouts")
    for c in checks:
        typer.echo(
            f"{c.rollout.route}: {c.rollout.candidate} {c.action} at {c.rollout.weight:g}% "
            f"({'; '.join(c.reasons)})"
        )


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add the release commands to the CLI."""
    models_app.command("show")(models_show)
    models_app.command("retire")(models_retire)
    app.command("promote")(promote_command)
    app.command("rollback")(rollback_command)
    app.add_typer(rollout_app, name="rollout")
