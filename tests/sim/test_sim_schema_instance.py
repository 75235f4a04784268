"""`instance_for_schema` produces values that `jsonschema` accepts."""

from __future__ import annotations

import enum
import random
from typing import Any, Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

from larrylab.sim import instance_for_schema

SEEDS = range(40)


class Stage(enum.Enum):
    EARLY = "early"
    GROWTH = "growth"
    MATURE = "mature"


class Evidence(BaseModel):
    quote: str = Field(min_length=5, max_length=80)
    weight: float = Field(gt=0, le=1)


class Assumption(BaseModel):
    statement: str
    risk: int = Field(ge=1, le=5)
    evidence: list[Evidence] = Field(min_length=1, max_length=3)
    tested: bool = False


class Critique(BaseModel):
    tool: Literal["red_team", "tta", "jtbd"]
    stage: Stage
    assumptions: list[Assumption] = Field(min_length=2)
    score: int = Field(ge=1, le=5)
    note: str | None = None
    tags: list[str] = Field(default_factory=list, max_length=4)


class Node(BaseModel):
    name: str
    children: list[Node] = Field(default_factory=list)


SCHEMAS: dict[str, dict[str, Any]] = {
    "pydantic nested": Critique.model_json_schema(),
    "pydantic recursive": Node.model_json_schema(),
    "scalars": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "when": {"type": "string", "format": "date-time"},
            "email": {"type": "string", "format": "email"},
            "site": {"type": "string", "format": "uri"},
            "flag": {"type": "boolean"},
            "nothing": {"type": "null"},
            "either": {"type": ["integer", "null"], "minimum": -3, "maximum": 3},
            "fixed": {"const": "PWS"},
            "short": {"type": "string", "minLength": 2, "maxLength": 4},
            "long": {"type": "string", "minLength": 120},
            "empty": {"type": "string", "maxLength": 0},
        },
        "required": ["id", "when", "flag", "fixed", "short", "long", "empty"],
        "additionalProperties": False,
    },
    "numbers": {
        "type": "object",
        "properties": {
            "exclusive": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3},
            "draft4": {"type": "number", "minimum": 0, "maximum": 1, "exclusiveMaximum": True},
            "multiple": {"type": "integer", "multipleOf": 7, "minimum": 10, "maximum": 40},
            "tenths": {"type": "number", "multipleOf": 0.1, "minimum": 0.5, "maximum": 2},
            "negative": {"type": "number", "exclusiveMaximum": 0},
            "big": {"type": "integer", "minimum": 1000000},
            "tight": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.001},
        },
        "required": ["exclusive", "draft4", "multiple", "tenths", "negative", "big", "tight"],
    },
    "arrays": {
        "type": "array",
        "items": {
            "type": "array",
            "items": {"enum": [1, 2, 3, "x"]},
            "minItems": 2,
            "maxItems": 2,
        },
        "minItems": 4,
        "maxItems": 6,
    },
    "unique and tuple": {
        "type": "object",
        "properties": {
            "unique": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "uniqueItems": True},
            "pair": {
                "type": "array",
                "prefixItems": [{"type": "string"}, {"type": "integer"}],
                "items": False,
                "minItems": 2,
            },
            "none": {"type": "array", "maxItems": 0},
        },
        "required": ["unique", "pair", "none"],
    },
    "combinators": {
        "definitions": {
            "name": {"type": "string", "minLength": 3},
            "base": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
        },
        "allOf": [
            {"$ref": "#/definitions/base"},
            {"properties": {"b": {"$ref": "#/definitions/name"}}, "required": ["b"]},
            {"properties": {"a": {"minimum": 5, "maximum": 9}}},
        ],
        "properties": {
            "c": {"oneOf": [{"type": "string", "maxLength": 3}, {"type": "boolean"}]},
            "d": {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "null"}]},
        },
        "required": ["c", "d"],
    },
    "openai strict": {
        "type": "object",
        "properties": {
            "reply": {"type": "string"},
            "follow_ups": {"type": "array", "items": {"type": "string"}},
            "meta": {
                "type": "object",
                "properties": {"category": {"type": "string", "enum": ["tta", "jtbd"]}},
                "required": ["category"],
                "additionalProperties": False,
            },
        },
        "required": ["reply", "follow_ups", "meta"],
        "additionalProperties": False,
    },
    "min properties": {
        "type": "object",
        "additionalProperties": {"type": "integer"},
        "minProperties": 3,
    },
    "empty": {},
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_instances_validate(name: str) -> None:
    schema = SCHEMAS[name]
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    for seed in SEEDS:
        value = instance_for_schema(schema, random.Random(seed))
        errors = [e.message for e in validator.iter_errors(value)]
        assert not errors, (seed, value, errors)


def test_pydantic_round_trip() -> None:
    for seed in SEEDS:
        value = instance_for_schema(Critique.model_json_schema(), random.Random(seed))
        critique = Critique.model_validate(value)
        assert len(critique.assumptions) >= 2


def test_arrays_default_to_one_to_three_items() -> None:
    lengths = {len(instance_for_schema({"type": "array"}, random.Random(seed))) for seed in SEEDS}
    assert lengths == {1, 2, 3}


def test_same_seed_same_value() -> None:
    schema = Critique.model_json_schema()
    first = instance_for_schema(schema, random.Random(11))
    assert instance_for_schema(schema, random.Random(11)) == first


def test_strings_use_corpus_words() -> None:
    text = instance_for_schema({"type": "string"}, random.Random(0))
    assert isinstance(text, str)
    assert all(word.isalpha() and word.islower() for word in text.split())


@pytest.mark.parametrize(
    "schema",
    [
        False,
        {"$ref": "https://example.com/schema.json"},
        {"$ref": "#/$defs/missing"},
        {"type": "integer", "minimum": 5, "maximum": 4},
        {"type": "array", "minItems": 5, "maxItems": 2},
        {"$ref": "#"},
    ],
)
def test_unusable_schemas_raise_value_error(schema: Any) -> None:
    with pytest.raises(ValueError):
        instance_for_schema(schema, random.Random(0))
