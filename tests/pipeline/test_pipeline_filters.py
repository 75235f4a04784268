"""Each filter with hand-made cases: rules, duplicates, contamination, the judge."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from larrylab.db._engine import make_engine, upgrade
from larrylab.pipeline.context import PipelineContext
from larrylab.pipeline.decontam import (
    Decontaminator,
    DecontamOptions,
    EvalItem,
    EvalSetError,
    default_eval_items,
    load_eval_file,
)
from larrylab.pipeline.dedup import Deduplicator, DedupOptions
from larrylab.pipeline.export import ExportOptions, run_export
from larrylab.pipeline.filter import FilterOptions, run_filter
from larrylab.pipeline.generate import GenerateOptions, run_generate
from larrylab.pipeline.judge import JudgeOptions, decide, judge_record
from larrylab.pipeline.llm import LLMClient, LLMOptions, RequestCache
from larrylab.pipeline.records import Record, read_records
from larrylab.pipeline.rules import RuleOptions, check_rules
from larrylab.sim import SimConfig
from tests.pipeline.factories import (
    ScriptedCompleter,
    ThreadSpec,
    counting_sim,
    seed_store,
    sim_context,
    simple_threads,
)

REPLY = "Who exactly struggles with this today, and what do they do about it now?"


def rec(messages: list[dict[str, Any]], rid: str = "r1") -> Record:
    return Record(
        id=rid, messages=messages, category="jtbd", origin="generated", source_thread_id="t"
    )


def conv(*pairs: tuple[str, str], system: bool = True) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": "You are Larry."}] if system else []
    for role, content in pairs:
        out.append({"role": role, "content": content})
    return out


# --- rules -----------------------------------------------------------------------------------


def test_a_well_formed_conversation_passes_the_rules() -> None:
    good = conv(("user", "I want to build an app."), ("assistant", REPLY))
    assert check_rules(rec(good), RuleOptions()) is None
    assert check_rules(rec(good[1:]), RuleOptions()) is None  # no system prompt is fine


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        (conv(("user", "Hi there"), ("user", "Hello?"), ("assistant", REPLY)), "roles: message 1"),
        (conv(("assistant", REPLY), ("user", "Hi there")), "roles: message 0"),
        (conv(("user", "Hi there"), ("assistant", REPLY), ("user", "And?")), "does not end"),
        (conv(("user", "Hi"), ("system", "sneaky"), ("assistant", REPLY)), "system message after"),
        (conv(system=True), "no user or assistant"),
        ([{"role": "tool", "content": "x"}], "schema: message 0 has role 'tool'"),
        ([{"role": "user", "content": None}], "schema: message 0 has no text"),
        ([], "schema: no messages"),
    ],
)
def test_bad_roles_and_shapes_are_dropped_with_the_reason(
    messages: list[dict[str, Any]], reason: str
) -> None:
    got = check_rules(rec(messages), RuleOptions())
    assert got is not None and reason in got


def test_length_bounds() -> None:
    opts = RuleOptions(min_reply_chars=20, max_chars=200, max_total_chars=300, max_turns=2)
    short = conv(("user", "Hi there"), ("assistant", "Ok."))
    assert "reply 2 is shorter" in (check_rules(rec(short), opts) or "")
    long_msg = conv(("user", "x" * 201), ("assistant", REPLY))
    assert "longer than 200" in (check_rules(rec(long_msg), opts) or "")
    many = conv(*[("user", "Tell me more please"), ("assistant", REPLY)] * 3)
    assert "more than 2 turns" in (check_rules(rec(many), opts) or "")


def test_language_rule_drops_text_that_is_not_latin_script() -> None:
    russian = conv(
        ("user", "Я хочу создать приложение для медсестёр"),
        ("assistant", "Кто именно страдает от этой проблемы сегодня?"),
    )
    assert (check_rules(rec(russian), RuleOptions()) or "").startswith("language:")
    mixed = conv(("user", "Café naïve résumé: is that English?"), ("assistant", REPLY))
    assert check_rules(rec(mixed), RuleOptions()) is None


# --- deduplication ---------------------------------------------------------------------------

BASE = (
    "Our meal kit customers keep cancelling after the third week and we think the recipes are "
    "too hard for busy parents who cook on weeknights after work with small children at home"
)


def _dups(texts: list[str], threshold: float = 0.8, references: int = 0) -> dict[int, str]:
    d = Deduplicator(DedupOptions(threshold=threshold))
    for i, text in enumerate(texts):
        d.add(f"k{i}", text, reference=i < references)
    return d.duplicates()


def test_exact_duplicates_match_after_normalisation() -> None:
    assert _dups([BASE, BASE.upper().replace(" ", "  ") + "!!"]) == {1: "exact duplicate of k0"}


def test_near_duplicates_are_dropped_and_distinct_texts_kept() -> None:
    near = BASE.replace("third week", "fourth week")
    other = "Where is electric scooter sharing on its S-curve, and how would we know it matured?"
    found = _dups([BASE, other, near], threshold=0.7)
    assert list(found) == [2] and found[2].startswith("near-duplicate of k0 (Jaccard about 0.")


def _changed(text: str, positions: range) -> str:
    tokens = text.split()
    for i in positions:
        tokens[i] = "x" + tokens[i]
    return " ".join(tokens)


def test_only_kept_texts_count_as_originals() -> None:
    # b nearly repeats a and is dropped; c nearly repeats b but not a, so c is kept.
    # (MinHash permutations are seeded: these estimates are the same on every run.)
    a = " ".join(f"w{i}" for i in range(200))
    b = _changed(a, range(5, 200, 20))
    c = _changed(b, range(2, 200, 10))
    assert list(_dups([b, c], threshold=0.45)) == [1]
    found = _dups([a, b, c], threshold=0.45)
    assert list(found) == [1] and found[1].startswith("near-duplicate of k0")


def test_near_duplicates_of_existing_training_data_are_dropped() -> None:
    # Duplicates among the references themselves are not reported: they are not candidates.
    found = _dups([BASE, BASE, BASE + " really"], references=2)
    assert list(found) == [2] and "k0" in found[2]


def test_references_come_first() -> None:
    d = Deduplicator(DedupOptions())
    d.add("x", BASE)
    with pytest.raises(ValueError, match="before"):
        d.add("ref", BASE, reference=True)


def test_many_texts_find_every_planted_duplicate() -> None:
    rng = __import__("random").Random(3)
    vocab = [f"v{i}" for i in range(2000)]
    texts = [" ".join(rng.choice(vocab) for _ in range(60)) for _ in range(400)]
    planted = {}
    for k in range(0, 400, 40):
        tokens = texts[k].split()
        tokens[30] = "changed"
        texts[k + 1] = " ".join(tokens)
        planted[k + 1] = f"k{k}"
    found = _dups(texts)
    assert set(found) == set(planted)
    assert all(found[i].startswith(f"near-duplicate of {planted[i]} ") for i in planted)


# --- decontamination -------------------------------------------------------------------------

EVAL_TEXT = (
    "Red team my idea: a subscription service that repairs broken toys for families with "
    "young children in small towns"
)


def _eval_item() -> EvalItem:
    return EvalItem(
        id="rt-07",
        messages=(("system", "You are Larry, the PWS coach of the workshop."), ("user", EVAL_TEXT)),
    )


def test_a_shared_13_gram_with_the_eval_set_is_contamination() -> None:
    decon = Decontaminator([_eval_item()])
    leaked = "Hi! " + " ".join(EVAL_TEXT.split()[2:15]) + " - what do you think?"
    reason = decon.check(leaked)
    assert reason is not None and "eval item rt-07" in reason


def test_twelve_shared_words_or_the_system_prompt_are_not_contamination() -> None:
    decon = Decontaminator([_eval_item()])
    twelve = " ".join(EVAL_TEXT.split()[:12])
    assert decon.exact(twelve + " banana") is None  # not a 13-gram (but nearly the item)
    aside = ", said the banker on the radio yesterday while discussing interest rates and rents"
    assert decon.check(twelve + aside) is None
    assert decon.check("You are Larry, the PWS coach of the workshop. " * 3) is None


def test_a_short_eval_item_contained_whole_is_contamination() -> None:
    short = EvalItem(id="sc-01", messages=(("user", "Where are smartphones on the S-curve?"),))
    tiny = EvalItem(id="x", messages=(("user", "What is JTBD?"),))
    decon = Decontaminator([short, tiny])
    reason = decon.check("Larry, where are smartphones on the s curve today, honestly?")
    assert reason is not None and "eval item sc-01" in reason
    near = decon.check("Where are smartphones heading on the S-curve?")
    assert near is not None and near.startswith("near-duplicate of eval item sc-01 (jaccard 0.")
    assert decon.check("Where is our product heading on its S-curve?") is None
    assert decon.check("So what is JTBD? Tell me.") is None and decon.short_items == 1


def test_eval_set_files_are_read_and_bad_lines_named(tmp_path: Path) -> None:
    path = tmp_path / "evals.jsonl"
    path.write_text(
        json.dumps(
            {"id": "x1", "category": "jtbd", "messages": [{"role": "user", "content": "hi"}]}
        )
        + "\n\n"
        + json.dumps({"messages": [{"role": "user", "content": "no id"}]})
        + "\n"
    )
    items = load_eval_file(path)
    assert [i.id for i in items] == ["x1", "item-3"] and items[0].category == "jtbd"
    path.write_text('{"messages": [{"role": "user"}]}\n')
    with pytest.raises(EvalSetError, match="line 1: message 0 needs"):
        load_eval_file(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(EvalSetError, match="line 1: each line must be a JSON object"):
        load_eval_file(path)
    with pytest.raises(EvalSetError, match="does not exist"):
        load_eval_file(tmp_path / "missing.jsonl")


def test_the_default_eval_set_is_the_evals_package_held_out_set() -> None:
    items, warning = default_eval_items()
    from larrylab.evals.evalset import load_eval_items

    assert warning is None
    assert [i.id for i in items] == [i.id for i in load_eval_items()]


# --- judge -----------------------------------------------------------------------------------


def answer(scores: dict[str, int]) -> str:
    return json.dumps({k: {"score": v, "rationale": f"{k} is {v}"} for k, v in scores.items()})


GOOD = {"pws_accuracy": 5, "pedagogical_value": 4, "realistic_user": 4, "larry_voice": 5}


def test_judge_thresholds() -> None:
    opts = JudgeOptions(min_mean=4.0, min_criterion=3)
    scores = {k: {"score": v, "rationale": "r"} for k, v in GOOD.items()}
    assert decide(scores, opts) == (4.5, None)
    scores["larry_voice"]["score"] = 2
    assert decide(scores, opts) == (3.75, "judge: larry_voice 2 below 3")
    flat = {k: {"score": 4 if k != "larry_voice" else 3, "rationale": "r"} for k in GOOD}
    assert decide(flat, opts)[1] == "judge: mean 3.75 below 4"


def _judge(tmp_path: Path, script: list) -> tuple[Any, Record, ScriptedCompleter]:
    completer = ScriptedCompleter(script)
    client = LLMClient(
        LLMOptions(model="openai/judge", retries=2, backoff_s=0.001),
        RequestCache(tmp_path),
        completer,
    )
    record = rec(conv(("user", "I want to build an app."), ("assistant", REPLY)))
    verdict = asyncio.run(judge_record(record, client, JudgeOptions()))
    return verdict, record, completer


def test_judge_survives_a_malformed_reply_by_retrying(tmp_path: Path) -> None:
    verdict, record, completer = _judge(tmp_path, ['{"pws_accuracy": ', answer(GOOD)])
    assert verdict.reason is None and len(completer.calls) == 2
    assert record.meta["judge"]["mean"] == 4.5
    assert record.meta["judge"]["rationales"]["larry_voice"] == "larry_voice is 5"


def test_judge_drops_with_reason_when_replies_stay_malformed(tmp_path: Path) -> None:
    missing = answer({k: v for k, v in GOOD.items() if k != "larry_voice"})
    verdict, record, completer = _judge(tmp_path, ["Sure! Here is my rating: 5/5", missing])
    assert verdict.malformed and len(completer.calls) == 3
    assert verdict.reason is not None and verdict.reason.startswith("judge: malformed answer")
    assert "larry_voice" in verdict.reason
    assert "judge" not in record.meta


def test_filter_drops_a_reworded_eval_item_and_its_variations_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    # Generated against an empty eval set, filtered against the built-in held-out set.
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    leaked = "Where are smartphones now on the S-curve?"  # eval item sc-01, reworded
    reply = "Before we place it: what measure of performance are you plotting, and since when?"
    seed_store(url, [*simple_threads(1), ThreadSpec(id="leak", users=[leaked], replies=[reply])])
    out = tmp_path / "run"
    keywords = PipelineContext(out=out, llm=LLMOptions(), progress=False)
    run_export(keywords, make_engine(url), ExportOptions(classifier="keywords"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with counting_sim(SimConfig(ttft_ms=1, tokens_per_s=0, seed=2)) as (sim_url, _):
        generated = run_generate(
            sim_context(out, sim_url), GenerateOptions(decontam=DecontamOptions(eval_set=empty))
        )
    assert generated.counts["variations"] == 10 and generated.counts["dropped_contaminated"] == 0
    judge = ScriptedCompleter([answer(GOOD)])
    ctx = PipelineContext(
        out=out, llm=LLMOptions(model="openai/judge"), completer=judge, progress=False
    )
    result = run_filter(ctx, FilterOptions())
    c = result.counts
    assert c["dropped_contaminated"] == 6  # the exported thread and its five variations
    assert (c["contaminated_export"], c["contaminated_generated"]) == (1, 5)
    assert c["kept"] == 6 and len(judge.calls) == 5  # only the clean variations were judged
    rows = [json.loads(x) for x in (out / "filter/dropped.jsonl").read_text().splitlines()]
    source = rows[0]["record"]["id"]
    assert rows[0]["reason"].startswith("contaminated: near-duplicate of eval item sc-01")
    assert all(r["reason"].startswith(f"contaminated: variation of {source} (") for r in rows[1:])
    kept = list(read_records(out / "filter/records.jsonl"))
    assert all(source not in (r.id, r.meta.get("source_record")) for r in kept)
    assert len(result.manifest["contaminated"]) == 6
