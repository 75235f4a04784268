"""Experiments: their definitions, ratings, and each experiment's report (per-arm rows, tests
of the candidates against the control, verdicts)."""

from larrylab.experiments._arm_report import ArmReport, arm_reports, arm_reports_on
from larrylab.experiments._experiments import (
    ConflictError,
    ExperimentPublic,
    NotFoundError,
    create_experiment,
    get_experiment,
    list_experiments,
    list_routes,
    set_route,
    update_experiment,
)
from larrylab.experiments._feedback import (
    Attribution,
    attribute_request,
    attribute_thread,
    replay_feedback,
    upsert_feedback,
)
from larrylab.experiments._report import (
    CandidateResult,
    ExperimentReport,
    ReportOptions,
    experiment_report,
    report_dict,
)

__all__ = [
    "ArmReport",
    "Attribution",
    "CandidateResult",
    "ConflictError",
    "ExperimentPublic",
    "ExperimentReport",
    "NotFoundError",
    "ReportOptions",
    "arm_reports",
    "arm_reports_on",
    "attribute_request",
    "attribute_thread",
    "create_experiment",
    "experiment_report",
    "get_experiment",
    "list_experiments",
    "list_routes",
    "replay_feedback",
    "report_dict",
    "set_route",
    "update_experiment",
    "upsert_feedback",
]
