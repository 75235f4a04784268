"""The audit log: who changed what, when and why (model states, gate decisions, rollouts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel
from sqlmodel import Session, select

from larrylab.db import AuditEvent


class AuditEventPublic(BaseModel):
    """An audit event as the API, CLI and dashboard show it."""

    id: int
    kind: str
    subject: str
    action: str
    from_state: str | None
    to_state: str | None
    actor: str
    reason: str
    details: dict[str, Any]
    created_at: datetime

    @property
    def model(self) -> str:
        """For model events: the model's name (the event's subject)."""
        return self.subject


def record_event(
    *,
    session: Session,
    kind: str,
    subject: str,
    action: str,
    actor: str,
    reason: str = "",
    from_state: str | None = None,
    to_state: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an event to the session (the caller commits it with the change it records)."""
    event = AuditEvent(
        kind=kind,
        subject=subject,
        action=action,
        from_state=from_state,
        to_state=to_state,
        actor=actor,
        reason=reason,
        details=orjson.dumps(details or {}, option=orjson.OPT_NON_STR_KEYS).decode(),
    )
    session.add(event)
    return event


def to_public(event: AuditEvent) -> AuditEventPublic:
    """The public view of an event."""
    assert event.id is not None
    return AuditEventPublic(
        id=event.id,
        kind=event.kind,
        subject=event.subject,
        action=event.action,
        from_state=event.from_state,
        to_state=event.to_state,
        actor=event.actor,
        reason=event.reason,
        details=orjson.loads(event.details or "{}"),
        created_at=event.created_at,
    )


def list_events(
    *,
    session: Session,
    kind: str | None = None,
    subject: str | None = None,
    limit: int = 200,
) -> list[AuditEventPublic]:
    """Events, newest first, optionally of one kind and subject."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)  # type: ignore[union-attr]
    if kind is not None:
        query = query.where(AuditEvent.kind == kind)
    if subject is not None:
        query = query.where(AuditEvent.subject == subject)
    return [to_public(e) for e in session.exec(query)]
