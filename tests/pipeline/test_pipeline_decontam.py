"""Decontamination against the built-in held-out eval set: reworded eval questions are caught
by MinHash near-duplicate search, ordinary PWS conversations are not, and contamination follows
a record's lineage to its variations."""

from __future__ import annotations

import io
import json
import random

import pytest

from larrylab.demo.learners import FOLLOW_UPS, OPENERS
from larrylab.pipeline.decontam import (
    CONTAMINATED,
    Decontaminator,
    EvalItem,
    Screen,
    default_eval_items,
)
from larrylab.pipeline.manifest import Tally
from larrylab.pipeline.records import Record
from larrylab.sim.corpus import PWS_REPLIES
from tests.pipeline.factories import SYSTEM, simple_threads

# Eval questions reworded: a few words changed, added or dropped, no 13-gram left in common.
PARAPHRASES = {
    "pc-01": "Hello Larry. Our team would like to build an app that lets nurses swap their "
    "shifts. Could you help us plan the features?",
    "pc-04": "I want to fix loneliness among old people. My solution is a companion robot. Is "
    "that a problem worth solving?",
    "pc-11": "I care about three problems: plastic in the oceans, parking in my neighbourhood "
    "and screen time for kids. Which one should I pick?",
    "tta-06": "What's the point of Trending to the Absurd? It feels like sci-fi.",
    "tta-15": "I don't see how trending to the absurd helps us find problems worth solving "
    "today. That absurd world will never happen.",
    "jtbd-04": "Why does JTBD say our competitor could be 'doing nothing'? Our competitor is "
    "clearly the other app in the store.",
    "jtbd-13": "Can I do JTBD with a survey rather than interviews? Interviews take way too long.",
    "sc-01": "Where are smartphones now on the S curve?",
    "sc-16": "I'm confused: if the S-curve's top is flat, why would anybody still invest there?",
    "dikw-12": "Our sensors collect the temperature every second in 50 greenhouses. The "
    "farmers still lose their crops. Why is the data not helping?",
    "rt-09": "Be harsh, Larry. What is wrong with our plan to fix traffic by building an app "
    "that shows free parking spaces?",
    "er-06": "I made a mistake: we interviewed our friends rather than real customers. Is "
    "everything wasted now?",
    "pc-03": "The owner, I suppose, when they check the monthly numbers. So should we make a "
    "dashboard showing the waste per dish?",
}
REPLIES = [reply for replies in PWS_REPLIES.values() for reply in replies]


@pytest.fixture(scope="module")
def decon() -> Decontaminator:
    items, warning = default_eval_items()
    assert warning is None and len(items) > 100
    return Decontaminator(items)


def _conversation(*turns: str) -> str:
    return "\n".join(turns)


@pytest.mark.parametrize("item", sorted(PARAPHRASES))
def test_a_reworded_eval_question_is_a_near_duplicate_of_its_item(
    decon: Decontaminator, item: str
) -> None:
    text = _conversation(PARAPHRASES[item], REPLIES[len(item)])
    assert decon.exact(text) is None  # no long n-gram survives the rewording
    reason = decon.check(text)
    assert reason is not None and reason.startswith(f"near-duplicate of eval item {item} (jaccard")
    assert 0.5 <= float(reason.split("jaccard ")[1][:4]) < 1


def test_ordinary_pws_conversations_are_not_contaminated(decon: Decontaminator) -> None:
    rng = random.Random(5)
    texts = [
        _conversation(
            f"{opener} (I'm learner {n}.)", rng.choice(REPLIES), follow, rng.choice(REPLIES)
        )
        for n, opener in enumerate(o for openers in OPENERS.values() for o in openers)
        for follow in FOLLOW_UPS
    ]
    texts += [_conversation(*t.users, *t.replies) for t in simple_threads(40)]
    texts += REPLIES
    flagged = {text[:60]: decon.check(text) for text in texts}
    assert len(texts) > 150
    assert {k: v for k, v in flagged.items() if v is not None} == {}


def test_the_threshold_decides_what_is_near() -> None:
    items, _ = default_eval_items()
    text = PARAPHRASES["pc-01"]
    strict = Decontaminator(items, threshold=0.9)
    assert strict.check(text) is None
    loose = Decontaminator(items, threshold=0.5)
    assert "eval item pc-01" in (loose.check(text) or "")
    with pytest.raises(ValueError, match="threshold"):
        Decontaminator(items, threshold=0)


def test_a_paraphrase_inside_a_long_message_is_found() -> None:
    item = EvalItem(id="x-1", messages=(("user", PARAPHRASES["pc-04"]),))
    decon = Decontaminator([item])
    padding = " ".join(REPLIES[:3])
    long_message = f"{padding} I want to fix loneliness among the old. {padding}"
    assert decon.check(long_message) is None  # one sentence of the item is not the item
    reworded = "I'd like to fix loneliness among old people; my solution is a companion robot. "
    reason = decon.check(f"{padding} {reworded}Is this a problem worth solving? {padding}")
    assert reason is not None and "eval item x-1" in reason


def _record(rid: str, text: str, *, origin: str, source: str | None = None) -> Record:
    return Record(
        id=rid,
        messages=[
            SYSTEM,
            {"role": "user", "content": text},
            {"role": "assistant", "content": REPLIES[0]},
        ],
        category="problem_clarification",
        origin=origin,
        source_thread_id="t",
        meta={"source_record": source} if source else {},
    )


def test_contamination_follows_lineage_to_variations(decon: Decontaminator) -> None:
    dropped, tally = io.BytesIO(), Tally()
    screen = Screen(decon, dropped, tally)
    tainted = _record("e1", PARAPHRASES["pc-01"], origin="export")
    clean = _record("e2", "We run a bakery and customers leave before ordering.", origin="export")
    harmless_child = _record(
        "e1:objection:0", "Bakers wake up early.", origin="generated", source="e1"
    )
    clean_child = _record(
        "e2:objection:0", "Bakers wake up early.", origin="generated", source="e2"
    )
    kept = [r.id for r in (tainted, clean, harmless_child, clean_child) if screen.passes(r)]
    assert kept == ["e2", "e2:objection:0"]
    rows = [json.loads(line) for line in dropped.getvalue().splitlines()]
    assert [(r["step"], r["record"]["id"]) for r in rows] == [
        (CONTAMINATED, "e1"),
        (CONTAMINATED, "e1:objection:0"),
    ]
    assert rows[0]["reason"].startswith("contaminated: near-duplicate of eval item pc-01")
    assert rows[1]["reason"].startswith("contaminated: variation of e1 (near-duplicate of eval")
    assert tally.counts["dropped_contaminated"] == 2
    assert tally.counts["contaminated_export"] == tally.counts["contaminated_generated"] == 1
    assert [r["record"] for r in screen.reasons] == ["e1", "e1:objection:0"]
