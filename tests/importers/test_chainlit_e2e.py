"""End to end with the real `chainlit` package: Larry-like history written by Chainlit's own
SQLAlchemy data layer into PostgreSQL, detailed ratings as Larry's JSON-lines records, then
`larrylab import chainlit` and `larrylab pipeline run` (on the simulator) into a dataset whose
threads, categories and ratings are the ones written, with no store id in any file it wrote;
a second import adds nothing."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from datasets import load_from_disk
from sqlalchemy import select
from sqlalchemy.engine import make_url

from larrylab.db import Feedback, Thread, make_engine
from larrylab.pipeline.pseudonyms import pseudonymizer
from larrylab.sim import SimConfig
from tests.importers.factories import T0, jsonl, larrylab, rating_record, stamp
from tests.pipeline.factories import counting_sim

pytestmark = pytest.mark.e2e


@dataclass
class Spec:
    """A thread to write: its bot, turns, thumbs on its replies and detailed scores."""

    bot: str
    topic: str
    turns: int
    thumbs: list[int] = field(default_factory=list)
    scores: list[int] = field(default_factory=list)
    exported: bool = True
    category: str | None = None  # the bot's PWS category (None: the classifier's)


SPECS = [
    Spec("tta", "grocery delivery by drone", 3, thumbs=[1, 1, 1], category="tta"),
    Spec("jtbd", "a subscription for bicycle repairs", 2, thumbs=[1], scores=[5], category="jtbd"),
    Spec("scurve", "solid state batteries for scooters", 4, scores=[4, 5], category="s_curve"),
    Spec("bono", "a bakery that opens at night", 2, thumbs=[1, 1]),
    Spec("redteam", "a marketplace for used lab equipment", 3, thumbs=[1, 0], exported=False),
    Spec("lawrence", "loneliness among remote workers", 2, scores=[2, 3], exported=False),
]


def _turn(spec: Spec, i: int) -> tuple[str, str]:
    user = (
        f"Turn {i} on {spec.topic}: here is what I noticed this week while talking to "
        f"{3 + i} potential customers about {spec.topic}."
    )
    reply = (
        f"Thank you. Looking at {spec.topic} through the lens of {spec.bot}, which of those "
        f"{3 + i} conversations surprised you most, and what did it reveal about the problem?"
    )
    return user, reply


@dataclass
class Written:
    """What the test wrote: thread ids per spec, reply ids, the user, the rating records."""

    threads: dict[str, str] = field(default_factory=dict)  # bot -> Chainlit thread id
    replies: dict[str, list[str]] = field(default_factory=dict)
    user_id: str = ""
    user_identifier: str = "ana.lopez@example.org"
    records: list[dict[str, Any]] = field(default_factory=list)
    thumbs: int = 0


async def _write_history(conninfo: str) -> Written:
    from chainlit.context import init_http_context
    from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
    from chainlit.types import Feedback as ChainlitFeedback
    from chainlit.user import User

    layer = SQLAlchemyDataLayer(conninfo=conninfo)
    written = Written()
    try:
        user = await layer.create_user(User(identifier=written.user_identifier, metadata={}))
        assert user is not None
        written.user_id = user.id
        for n, spec in enumerate(SPECS):
            tid = str(uuid.uuid4())
            init_http_context(thread_id=tid, user=user)
            await layer.update_thread(
                tid, name=spec.topic, user_id=user.id, metadata={"chat_profile": spec.bot}
            )
            written.threads[spec.bot] = tid
            replies = []
            for i in range(spec.turns):
                at = T0 + timedelta(hours=n, minutes=2 * i)
                user_text, reply_text = _turn(spec, i)
                for kind, name, output, when in (
                    ("user_message", written.user_identifier, user_text, at),
                    ("run", "on_message", "", at + timedelta(seconds=1)),
                    ("assistant_message", "Larry", reply_text, at + timedelta(seconds=20)),
                ):
                    step_id = str(uuid.uuid4())
                    await layer.create_step(
                        {
                            "id": step_id,
                            "name": name,
                            "type": kind,  # type: ignore[typeddict-item]
                            "threadId": tid,
                            "streaming": False,
                            "output": output,
                            "createdAt": stamp(when),
                            "start": stamp(when),
                            "end": stamp(when),
                            "metadata": {},
                        }
                    )
                    if kind == "assistant_message":
                        replies.append(step_id)
            written.replies[spec.bot] = replies
            for reply, value in zip(replies, spec.thumbs, strict=False):
                await layer.upsert_feedback(
                    ChainlitFeedback(forId=reply, threadId=tid, value=value)  # type: ignore[arg-type]
                )
                written.thumbs += 1
            for reply, score in zip(reversed(replies), spec.scores, strict=False):
                written.records.append(
                    rating_record(reply, tid, score, bot=spec.bot, categories={"depth": True})
                )
    finally:
        await layer.engine.dispose()
    return written


@pytest.fixture(scope="module")
def chainlit_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Chainlit writes its config folder into its app root when imported: a scratch one."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHAINLIT_APP_ROOT", str(tmp_path_factory.mktemp("chainlit-app")))
        mp.delenv("DATABASE_URL", raising=False)
        yield


def _every_file_under(folder: Path) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            yield path, path.read_bytes()


def test_larrys_history_becomes_a_dataset(
    chainlit_home: None,
    chainlit_postgres: str,
    migrated_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LARRYLAB_PSEUDONYM_KEY", raising=False)
    conninfo = make_url(chainlit_postgres).set(drivername="postgresql+asyncpg")
    source = conninfo.render_as_string(hide_password=False)
    written = asyncio.run(_write_history(source))
    ratings = tmp_path / "feedback.jsonl"
    ratings.write_text(jsonl(written.records))

    args = ["import", "chainlit", "--from", source, "--ratings", str(ratings)]
    args += ["--database-url", migrated_url, "--json"]
    first = larrylab(*args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    n_messages = 2 * sum(s.turns for s in SPECS)
    assert (summary["threads"], summary["messages"]) == (len(SPECS), n_messages)
    assert summary["ratings"] == written.thumbs + len(written.records)
    assert summary["skipped"] == {}

    engine = make_engine(migrated_url)
    with engine.connect() as conn:
        rows = conn.execute(select(Feedback.__table__)).all()  # type: ignore[attr-defined]
        thread_ids = set(conn.execute(select(Thread.__table__.c.id)).scalars())  # type: ignore[attr-defined]
    assert thread_ids == {f"chainlit:{tid}" for tid in written.threads.values()}
    assert sorted(r.thumb for r in rows if r.source == "chainlit") == sorted(
        v for s in SPECS for v in s.thumbs
    )
    assert sorted(r.score for r in rows if r.source == "chainlit-ratings") == sorted(
        v for s in SPECS for v in s.scores
    )

    out = tmp_path / "run"
    evals = tmp_path / "evals.jsonl"
    evals.write_text(
        json.dumps({"id": "e1", "messages": [{"role": "user", "content": "What is a JTBD?"}]})
        + "\n"
    )
    monkeypatch.setenv("SIM_KEY", "simulated")
    with counting_sim(SimConfig(ttft_ms=1, tokens_per_s=0, seed=3, structured_bias=0.85)) as (
        url,
        _,
    ):
        run = larrylab(
            "pipeline", "run", "--out", str(out), "--database-url", migrated_url,
            "--model", "openai/gemini-2.5-flash", "--api-base", f"{url}/v1",
            "--api-key-env", "SIM_KEY", "--eval-set", str(evals), "--json",
        )  # fmt: skip
    assert run.exit_code == 0, run.output
    stages = {s["stage"]: s for s in json.loads(run.stdout)["stages"]}
    assert [s["status"] for s in stages.values()] == ["done"] * 4
    exported = [s for s in SPECS if s.exported]
    counts = stages["export"]["counts"]
    assert (counts["threads_imported"], counts["threads_routed"]) == (len(exported), 0)
    assert counts["records_imported"] == len(exported) and counts["threads_vetoed"] == 0
    assert counts["threads_vetoed_thumbs_down"] == 1 and counts["threads_below_min_score"] == 1
    assert counts["categories_from_bot"] == sum(1 for s in exported if s.category)

    pseudonym = pseudonymizer(out)
    expected = {pseudonym(f"chainlit:{written.threads[s.bot]}"): s for s in exported}
    data = load_from_disk(str(out / "dataset/hf"))
    rows_out = [row for split in ("train", "validation") for row in data[split]]
    assert {row["source_thread_id"] for row in rows_out} == set(expected)
    originals = {row["source_thread_id"]: row for row in rows_out if row["origin"] == "export"}
    assert set(originals) == set(expected)
    for thread, spec in expected.items():
        row = originals[thread]
        assert len(row["messages"]) == 2 * spec.turns
        assert row["messages"][-1]["content"] == _turn(spec, spec.turns - 1)[1]
        if spec.category:
            assert row["category"] == spec.category
    records = [json.loads(line) for line in (out / "export/records.jsonl").read_text().splitlines()]
    for rec in records:
        spec = expected[rec["source_thread_id"]]
        assert rec["meta"]["bot"] == spec.bot
        assert rec["meta"]["source_message_ids"][-1] == written.replies[spec.bot][-1]
    manifest = json.loads((out / "export/manifest.json").read_text())
    assert manifest["pseudonyms"] == {
        "method": "HMAC-SHA256",
        "key": f"generated in {out / '.pseudonym-key'}",
    }
    assert os.stat(out / ".pseudonym-key").st_mode & 0o777 == 0o600

    secrets = {*thread_ids, *written.threads.values(), written.user_id, written.user_identifier}
    for path, content in _every_file_under(out):
        for secret in secrets:
            assert secret.encode() not in content, f"{secret} in {path}"

    again = larrylab(*args)
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert (second["threads"], second["messages"], second["ratings"]) == (0, 0, 0)
    assert second["ratings_updated"] == 0 and second["threads_extended"] == 0
    assert second["skipped"] == {
        "thread already imported": len(SPECS),
        "rating already imported": written.thumbs + len(written.records),
    }
