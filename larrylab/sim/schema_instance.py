"""`instance_for_schema`: a JSON value that validates against a JSON Schema.

Covers what structured-output requests use in practice (OpenAI `json_schema`, Ollama
`format`, pydantic's `model_json_schema()`): types, objects, arrays, enums, consts, string
lengths and a few formats, numeric bounds and `multipleOf`, `anyOf`/`oneOf` (first branch),
`allOf` (merged) and local `$ref`s. Patterns, `not` and conditionals are not honoured.
"""

from __future__ import annotations

import json
import math
import random
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from larrylab.sim.corpus import PWS_REPLIES

_MAX_DEPTH = 32  # deeper than this the schema is taken to recurse without end
_SHALLOW = 5  # from this depth on, containers are kept minimal so recursive schemas end
_MAX_REF_STEPS = 64

_WORDS: tuple[str, ...] = tuple(
    sorted(
        {
            word.lower()
            for replies in PWS_REPLIES.values()
            for reply in replies
            for word in re.findall(r"[A-Za-z]{3,}", reply)
        }
    )
)

_LOWER_KEYS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER_KEYS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")


def instance_for_schema(
    schema: dict[str, Any], rng: random.Random, *, top_bias: float = 0.0
) -> Any:
    """A JSON value valid against `schema`, drawn with `rng`.

    Args:
        schema: A JSON Schema (draft 4 to 2020-12); `$ref`s must point inside it.
        rng: Source of randomness; the same seed gives the same value.
        top_bias: Probability that a number is drawn at the top of its range (integers: the
            maximum; other numbers: the top tenth) instead of uniformly; 0 draws uniformly.

    Returns:
        A JSON-serialisable value.

    Raises:
        ValueError: The schema is unsatisfiable in a way the generator notices, recurses
            without end, or refers outside itself.
    """
    return _Builder(schema, rng, top_bias).build(schema, 0)


class _Builder:
    def __init__(self, root: dict[str, Any], rng: random.Random, top_bias: float = 0.0) -> None:
        self.root = root
        self.rng = rng
        self.top_bias = top_bias

    def build(self, schema: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise ValueError(f"Schema nests deeper than {_MAX_DEPTH} levels; is it unbounded?")
        if schema is False:
            raise ValueError("Schema `false` accepts no value.")
        if not isinstance(schema, dict):
            schema = {}
        schema = self._flatten(schema, depth)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self.rng.choice(list(schema["enum"]))
        kind = _type_of(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind in ("integer", "number"):
            return _number(schema, self.rng, integer=kind == "integer", top_bias=self.top_bias)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return _string(schema, self.rng)

    def _flatten(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        """Resolve `$ref`, `allOf`, `anyOf` and `oneOf` into one plain schema."""
        for _ in range(_MAX_REF_STEPS):
            if "$ref" in schema:
                schema = _merge(self._resolve(schema["$ref"]), _without(schema, "$ref"))
            elif "allOf" in schema:
                merged = _without(schema, "allOf")
                for part in schema["allOf"]:
                    merged = _merge(merged, self._flatten(_as_dict(part), depth))
                schema = merged
            elif "anyOf" in schema or "oneOf" in schema:
                key = "anyOf" if "anyOf" in schema else "oneOf"
                branch = _as_dict(self._branch(schema[key], depth))
                schema = _merge(_without(schema, key), branch)
            else:
                return schema
        raise ValueError(f"Schema `$ref`s loop more than {_MAX_REF_STEPS} times.")

    def _resolve(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#"):
            raise ValueError(f"Only local `$ref`s (starting with '#') are supported, got {ref!r}.")
        node: Any = self.root
        for raw in filter(None, ref[1:].split("/")):
            part = raw.replace("~1", "/").replace("~0", "~")
            try:
                node = node[int(part)] if isinstance(node, list) else node[part]
            except (KeyError, IndexError, ValueError, TypeError):
                raise ValueError(f"`$ref` {ref!r} points at nothing in the schema.") from None
        return _as_dict(node)

    def _branch(self, branches: list[Any], depth: int) -> Any:
        """The first branch; deep down, a `null` or `$ref`-free one so recursion ends."""
        if depth >= _SHALLOW:
            for branch in branches:
                if isinstance(branch, dict) and branch.get("type") == "null":
                    return branch
            for branch in branches:
                if isinstance(branch, dict) and "$ref" not in branch:
                    return branch
        return branches[0]

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties") or {}
        required = [name for name in schema.get("required", []) if isinstance(name, str)]
        limit = schema.get("maxProperties")
        out: dict[str, Any] = {}
        for name in required:
            out[name] = self.build(properties.get(name, True), depth + 1)
        if depth < _SHALLOW:
            for name, sub in properties.items():
                if name not in out and (limit is None or len(out) < limit):
                    out[name] = self.build(sub, depth + 1)
        extra = schema.get("additionalProperties", True)
        index = 1
        while len(out) < schema.get("minProperties", 0) and extra is not False:
            key = f"extra_{index}"
            index += 1
            if key not in out and key not in properties:
                out[key] = self.build(extra if isinstance(extra, dict) else {}, depth + 1)
        return out

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        prefix: list[Any] = schema.get("prefixItems") or []
        items: Any = schema.get("items", True)
        if isinstance(items, list):  # draft 4-2019 tuple form
            prefix, items = items, schema.get("additionalItems", True)
        count = self._array_length(schema, depth)
        if items is False:
            count = min(count, len(prefix))
        if not schema.get("uniqueItems"):
            return [self.build(_item(prefix, items, i), depth + 1) for i in range(count)]
        values: list[Any] = []
        seen: set[str] = set()
        for _ in range(count * 20):
            if len(values) == count:
                break
            value = self.build(_item(prefix, items, len(values)), depth + 1)
            key = json.dumps(value, sort_keys=True)
            if key not in seen:
                seen.add(key)
                values.append(value)
        return values

    def _array_length(self, schema: dict[str, Any], depth: int) -> int:
        low = int(schema.get("minItems", 0))
        high = schema.get("maxItems")
        if depth >= _SHALLOW:
            return low
        high = int(high) if high is not None else max(low, 3)
        if low > high:
            raise ValueError(f"Array schema wants at least {low} but at most {high} items.")
        return self.rng.randint(min(max(low, 1), high), high)


def _item(prefix: list[Any], items: Any, index: int) -> Any:
    return prefix[index] if index < len(prefix) else items


def _as_dict(schema: Any) -> dict[str, Any]:
    if schema is False:
        raise ValueError("Schema `false` accepts no value.")
    return schema if isinstance(schema, dict) else {}


def _without(schema: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != key}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Both schemas at once (`allOf`), as far as the generator needs to know."""
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif key == "properties":
            props = dict(out[key])
            for name, sub in value.items():
                props[name] = {"allOf": [props[name], sub]} if name in props else sub
            out[key] = props
        elif key == "required":
            out[key] = list(dict.fromkeys([*out[key], *value]))
        elif key == "type":
            out[key] = _intersect_types(out[key], value)
        elif key in _LOWER_KEYS and _is_number(out[key]) and _is_number(value):
            out[key] = max(out[key], value)
        elif key in _UPPER_KEYS and _is_number(out[key]) and _is_number(value):
            out[key] = min(out[key], value)
        else:
            out[key] = value
    return out


def _intersect_types(a: Any, b: Any) -> Any:
    left = [a] if isinstance(a, str) else list(a)
    right = [b] if isinstance(b, str) else list(b)
    both = [t for t in left if t in right]
    if "integer" in left and "number" in right and "integer" not in both:
        both.append("integer")
    if "number" in left and "integer" in right and "integer" not in both:
        both.append("integer")
    return both or right


_INFERRED_TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("object", ("properties", "required", "additionalProperties", "minProperties")),
    ("array", ("items", "prefixItems", "minItems", "maxItems", "uniqueItems")),
    ("string", ("minLength", "maxLength", "pattern", "format")),
    ("number", ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")),
)


def _type_of(schema: dict[str, Any]) -> str:
    declared = schema.get("type")
    if isinstance(declared, str):
        return declared
    if isinstance(declared, list) and declared:
        non_null = [t for t in declared if t != "null"]
        return str(non_null[0]) if non_null else "null"
    for kind, keys in _INFERRED_TYPES:
        if any(key in schema for key in keys):
            return kind
    return "string"


def _moment(rng: random.Random) -> datetime:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return start + timedelta(seconds=rng.randrange(365 * 24 * 3600))


_FORMATS: dict[str, Callable[[random.Random], str]] = {
    "date-time": lambda rng: _moment(rng).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "date": lambda rng: _moment(rng).strftime("%Y-%m-%d"),
    "time": lambda rng: _moment(rng).strftime("%H:%M:%SZ"),
    "email": lambda rng: f"{rng.choice(_WORDS)}@example.com",
    "uri": lambda rng: f"https://example.com/pws/{rng.choice(_WORDS)}",
    "url": lambda rng: f"https://example.com/pws/{rng.choice(_WORDS)}",
    "uri-reference": lambda rng: f"/pws/{rng.choice(_WORDS)}",
    "hostname": lambda rng: f"{rng.choice(_WORDS)}.example.com",
    "ipv4": lambda rng: f"192.0.2.{rng.randint(1, 254)}",
    "ipv6": lambda rng: f"2001:db8::{rng.randint(1, 0xFFFF):x}",
    "uuid": lambda rng: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    "duration": lambda rng: f"PT{rng.randint(1, 59)}M",
}


def _string(schema: dict[str, Any], rng: random.Random) -> str:
    make = _FORMATS.get(str(schema.get("format")))
    if make is not None:
        return make(rng)
    min_len = int(schema.get("minLength", 0))
    max_len = schema.get("maxLength")
    text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 6)))
    while len(text) < min_len:
        text += " " + rng.choice(_WORDS)
    if max_len is not None and len(text) > max_len:
        text = text[: int(max_len)].rstrip()
    return text.ljust(min_len, "x")


def _bounds(schema: dict[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    """`(low, low_exclusive, high, high_exclusive)` from draft-4 or later keywords."""
    low, high = schema.get("minimum"), schema.get("maximum")
    low_ex = high_ex = False
    ex_min, ex_max = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if ex_min is True:
        low_ex = low is not None
    elif _is_number(ex_min) and (low is None or ex_min >= low):
        low, low_ex = ex_min, True
    if ex_max is True:
        high_ex = high is not None
    elif _is_number(ex_max) and (high is None or ex_max <= high):
        high, high_ex = ex_max, True
    return low, low_ex, high, high_ex


def _number(
    schema: dict[str, Any], rng: random.Random, *, integer: bool, top_bias: float = 0.0
) -> int | float:
    low, low_ex, high, high_ex = _bounds(schema)
    if integer:
        lo_i = None if low is None else (math.floor(low) + 1 if low_ex else math.ceil(low))
        hi_i = None if high is None else (math.ceil(high) - 1 if high_ex else math.floor(high))
        lo_f, hi_f = _default_range(lo_i, hi_i)
        low, high, low_ex, high_ex = lo_f, hi_f, False, False
    else:
        lo_f, hi_f = _default_range(low, high)
    if lo_f > hi_f or (lo_f == hi_f and (low_ex or high_ex)):
        raise ValueError(f"Numeric schema has an empty range: {schema!r}.")

    def fits(value: float) -> bool:
        above = value > lo_f if low_ex else value >= lo_f
        below = value < hi_f if high_ex else value <= hi_f
        return above and below

    step = schema.get("multipleOf")
    if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
        return _multiple(step, lo_f, hi_f, fits, rng, integer=integer)
    high_end = top_bias > 0 and rng.random() < top_bias
    if integer:
        return int(hi_f) if high_end else rng.randint(int(lo_f), int(hi_f))
    start = lo_f + 0.9 * (hi_f - lo_f) if high_end else lo_f
    value = round(rng.uniform(start, hi_f), 2)
    return value if fits(value) else (lo_f + hi_f) / 2


def _default_range(low: float | None, high: float | None) -> tuple[float, float]:
    """The bounds, with a span of about 100 filled in where the schema gives none."""
    if low is None:
        if high is None:
            return 0, 100
        return (0 if high > 0 else high - 100), high
    if high is None:
        return low, max(low, 0) + 100
    return low, high


def _multiple(
    step: float,
    low: float,
    high: float,
    fits: Callable[[float], bool],
    rng: random.Random,
    *,
    integer: bool,
) -> int | float:
    first, last = math.ceil(low / step), math.floor(high / step)
    tries = [rng.randint(first, last) for _ in range(64)] if first <= last else []
    for k in [*tries, first, last]:
        value = round(k * step, 10)
        if integer and value != int(value):
            continue
        if fits(value) and _divides(value, step):
            return int(value) if integer or isinstance(step, int) else value
    raise ValueError(f"No multiple of {step} found between {low} and {high}.")


def _divides(value: float, step: float) -> bool:
    """The way `jsonschema` checks `multipleOf`."""
    if isinstance(step, float):
        quotient = value / step
        return int(quotient) == quotient
    return value % step == 0
