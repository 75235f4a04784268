"""The simulator's opt-in `structured_bias`: numbers at the top of their range (an approving
judge), with the default unchanged."""

from __future__ import annotations

import random

import pytest

from larrylab.sim import SimConfig, instance_for_schema
from larrylab.sim.engine import Simulator

SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "ratio": {"type": "number", "minimum": 0, "maximum": 10},
        "note": {"type": "string"},
    },
    "required": ["score", "ratio", "note"],
}


def test_full_bias_draws_the_top_of_every_range() -> None:
    rng = random.Random(1)
    for _ in range(50):
        value = instance_for_schema(SCHEMA, rng, top_bias=1.0)
        assert value["score"] == 5 and 9 <= value["ratio"] <= 10


def test_partial_bias_mostly_approves() -> None:
    rng = random.Random(2)
    scores = [instance_for_schema(SCHEMA, rng, top_bias=0.8)["score"] for _ in range(500)]
    assert 0.75 < scores.count(5) / 500 < 0.95 and min(scores) == 1


def test_no_bias_is_the_old_behaviour() -> None:
    a = [instance_for_schema(SCHEMA, random.Random(3)) for _ in range(3)]
    b = [instance_for_schema(SCHEMA, random.Random(3), top_bias=0.0) for _ in range(3)]
    assert a == b
    assert SimConfig().structured_bias == 0.0


def test_the_simulator_applies_its_configured_bias() -> None:
    sim = Simulator(SimConfig(seed=1, structured_bias=1.0))
    reply = sim.reply([{"role": "user", "content": "rate"}], schema=SCHEMA)
    assert '"score": 5' in reply.text


def test_bias_must_be_a_probability() -> None:
    with pytest.raises(ValueError, match="structured_bias"):
        SimConfig(structured_bias=1.5)
