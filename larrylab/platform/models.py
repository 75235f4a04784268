"""The store's tables (SQLModel). One name for one thing, in code, API, database and dashboard.

Transcripts are stored as a tree of messages per thread: each message row holds one message
and a pointer to its parent, keyed by a hash of the chain that leads to it. A request points at
the last message of its prompt and at its reply, so storage grows linearly with a conversation
and every prompt can be rebuilt exactly as the model saw it (edits and regenerations branch).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Now, as an aware UTC datetime (the store keeps UTC everywhere)."""
    return datetime.now(UTC)


class ModelEntry(SQLModel, table=True):
    """A model larrylab can route to: how to reach it, and its registry state."""

    __tablename__ = "model"

    name: str = Field(primary_key=True, max_length=200)
    api: str = Field(default="openai", max_length=20)
    base_url: str | None = Field(default=None, max_length=2000)
    upstream_model: str | None = Field(default=None, max_length=200)
    api_key_env: str | None = Field(default=None, max_length=200)
    litellm_model: str | None = Field(default=None, max_length=200)
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float = 30.0
    total_timeout_s: float = 120.0
    state: str = Field(default="registered", max_length=20)
    lineage: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Route(SQLModel, table=True):
    """A name Larry calls; its model serves it when no experiment is running on it."""

    __tablename__ = "route"

    name: str = Field(primary_key=True, max_length=200)
    model: str = Field(foreign_key="model.name", max_length=200)
    updated_at: datetime = Field(default_factory=utcnow)


class Experiment(SQLModel, table=True):
    """An A/B test splitting a route's threads between arms."""

    __tablename__ = "experiment"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True, max_length=200)
    route: str = Field(index=True, max_length=200)
    seed: str = Field(max_length=200)
    status: str = Field(default="running", max_length=20)
    description: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    stopped_at: datetime | None = None


class Arm(SQLModel, table=True):
    """One arm of an experiment: a model and its share of traffic."""

    __tablename__ = "arm"
    __table_args__ = (UniqueConstraint("experiment_id", "model"),)

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiment.id", index=True)
    model: str = Field(foreign_key="model.name", max_length=200)
    weight: float
    control: bool = False
    position: int = 0


class Thread(SQLModel, table=True):
    """A conversation thread: the unit of assignment."""

    __tablename__ = "thread"

    id: str = Field(primary_key=True, max_length=256)
    unit_source: str = Field(max_length=10)
    route: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)


class Message(SQLModel, table=True):
    """One message of a thread's transcript; `id` hashes the chain of messages up to it."""

    __tablename__ = "message"

    id: str = Field(primary_key=True, max_length=64)
    thread_id: str = Field(index=True, max_length=256)
    parent_id: str | None = Field(default=None, max_length=64)
    depth: int
    role: str = Field(max_length=20)
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class RequestLog(SQLModel, table=True):
    """One chat completion request through the router, as the client saw it."""

    __tablename__ = "request"
    __table_args__ = (
        # Per-arm analysis reads these without touching the table: distinct threads, and
        # latency percentiles walked in index order.
        Index("ix_request_exp_arm_thread", "experiment", "arm", "thread_id"),
        Index("ix_request_exp_arm_status_latency", "experiment", "arm", "status", "latency_ms"),
        Index("ix_request_exp_arm_status_ttft", "experiment", "arm", "status", "ttft_ms"),
        Index("ix_request_created_at", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=64)
    thread_id: str = Field(index=True, max_length=256)
    unit_source: str = Field(max_length=10)
    route: str = Field(max_length=200)
    experiment: str | None = Field(default=None, max_length=200)
    arm: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, max_length=200)
    upstream_model: str | None = Field(default=None, max_length=200)
    stream: bool = False
    status: str = Field(max_length=20)
    http_status: int
    error_class: str | None = Field(default=None, max_length=100)
    error_message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    fallback_from: str | None = Field(default=None, max_length=200)
    latency_ms: float
    ttft_ms: float | None = None
    upstream_ms: float | None = None
    overhead_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_message_id: str | None = Field(default=None, max_length=64)
    reply_message_id: str | None = Field(default=None, max_length=64)
    created_at: datetime
    finished_at: datetime


class Feedback(SQLModel, table=True):
    """A 1-5 star rating of one request or of a whole thread, by a source."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("target", "source", name="uq_feedback_target_source"),
        Index("ix_feedback_experiment_arm", "experiment", "arm"),
    )

    id: int | None = Field(default=None, primary_key=True)
    target: str = Field(max_length=300)
    request_id: str | None = Field(default=None, index=True, max_length=64)
    thread_id: str = Field(index=True, max_length=256)
    experiment: str | None = Field(default=None, max_length=200)
    arm: str | None = Field(default=None, max_length=200)
    score: int
    comment: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    source: str = Field(default="user", max_length=100)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ArmStat(SQLModel, table=True):
    """Running totals of one metric of one experiment arm: n, sum and sum of squares."""

    __tablename__ = "arm_stat"

    experiment: str = Field(primary_key=True, max_length=200)
    arm: str = Field(primary_key=True, max_length=200)
    metric: str = Field(primary_key=True, max_length=40)
    n: int = Field(default=0, sa_type=BigInteger)
    sum: float = 0.0
    sum_squares: float = 0.0


class ArmThread(SQLModel, table=True):
    """Each thread an experiment arm has served, once (distinct threads per arm)."""

    __tablename__ = "arm_thread"

    experiment: str = Field(primary_key=True, max_length=200)
    arm: str = Field(primary_key=True, max_length=200)
    thread_id: str = Field(primary_key=True, max_length=256)
