"""Chat templates for training: `{% generation %}` markers for assistant-only loss.

TRL computes the loss on assistant turns only when the tokenizer's chat template marks them
with `{% generation %}...{% endgeneration %}`. The official Llama 3.x, Mistral and ChatML
(SmolLM2-style) templates have no markers, so this module adds them and checks the result: the
marked template must render every conversation exactly as the original does, and each marked
span must hold one assistant reply followed by its end-of-turn token (so the model learns to
stop).

The tiny test model uses a ChatML-style template written here with the markers in place.
"""

from __future__ import annotations

import re
from typing import Any

FAMILIES = ("llama3", "mistral", "chatml")

TINY_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] | trim + '<|im_end|>' }}{% endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- message['content'] | trim + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Llama 3.0's plain template with markers (the same text TRL ships as its training variant).
LLAMA3_TRAINING_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.index0 == 0 %}{{- bos_token }}{%- endif %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% generation %}{{- message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
    "{%- else %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

_MARKER_RE = re.compile(r"\{%-?\s*generation\s*-?%\}")
# Llama 3.1/3.2: one expression renders every plain message, whatever its role.
_LLAMA3_MESSAGE_RE = re.compile(
    r"\{\{-?\s*(?P<expr>'<\|start_header_id\|>'\s*\+\s*message\[(?P<q>['\"])role(?P=q)\]\s*\+\s*"
    r"'<\|end_header_id\|>\\n\\n'\s*\+\s*message\[(?P=q)content(?P=q)\]\s*\|\s*trim\s*\+\s*"
    r"'<\|eot_id\|>')\s*-?\}\}"
)
# ChatML (SmolLM2): one expression renders every message, whatever its role; its newlines are
# either `\n` escapes or real newlines inside the string literals.
_NL = r"(?:\\n|\n)"
_CHATML_MESSAGE_RE = re.compile(
    r"\{\{-?\s*'<\|im_start\|>'\s*\+\s*message\[(?P<q>['\"])role(?P=q)\]\s*\+\s*"
    rf"'(?P<nl>{_NL})'\s*\+\s*message\[(?P=q)content(?P=q)\](?P<trim>\s*\|\s*trim)?\s*\+\s*"
    rf"'<\|im_end\|>(?P<nl1>{_NL})?'\s*(?:\+\s*'(?P<nl2>{_NL})'\s*)?-?\}}\}}"
)
# Mistral: the assistant branch is the expression that joins the content with eos_token.
_MISTRAL_ASSISTANT_RE = re.compile(
    r"\{\{-?\s*(?P<expr>[^{}]*message\[(?P<q>['\"])content(?P=q)\][^{}]*\+\s*eos_token)\s*-?\}\}"
)

_PROBES: tuple[list[dict[str, str]], ...] = (
    [
        {"role": "system", "content": "You coach with the PWS methodology."},
        {"role": "user", "content": "Is my idea a problem worth solving?"},
        {"role": "assistant", "content": "Who has this problem, and how often?"},
    ],
    [
        {"role": "user", "content": "We want to build an app for clinics."},
        {"role": "assistant", "content": "What happens in the clinic today?"},
        {"role": "user", "content": "Patients wait two hours."},
        {"role": "assistant", "content": "What does waiting cost them?"},
    ],
)


class ChatTemplateError(ValueError):
    """A chat template that cannot be used for assistant-only training; the message says why."""


def has_generation_markers(template: str | None) -> bool:
    """Whether `template` marks assistant turns with `{% generation %}`."""
    return bool(template) and _MARKER_RE.search(template or "") is not None


def detect_family(template: str | None) -> str | None:
    """The prompt format a template writes: "llama3", "mistral", "chatml", or None."""
    if not template:
        return None
    if "<|start_header_id|>" in template and "<|eot_id|>" in template:
        return "llama3"
    if "[INST]" in template:
        return "mistral"
    if "<|im_start|>" in template and "<|im_end|>" in template:
        return "chatml"
    return None


def render(
    template: str,
    messages: list[dict[str, str]],
    *,
    special_tokens: dict[str, str],
    add_generation_prompt: bool = False,
    with_spans: bool = False,
) -> tuple[str, list[tuple[int, int]]]:
    """Render one conversation with transformers' chat-template engine.

    Returns the text and, with `with_spans`, the character spans marked as generation.
    """
    from transformers.utils.chat_template_utils import render_jinja_template

    renderer: Any = render_jinja_template
    texts, spans = renderer(
        conversations=[messages],
        chat_template=template,
        return_assistant_tokens_mask=with_spans,
        add_generation_prompt=add_generation_prompt,
        **special_tokens,
    )
    text: str = texts[0]
    return text, [(int(s[0]), int(s[1])) for s in spans[0]] if with_spans else []


def supports_system_role(template: str, *, special_tokens: dict[str, str]) -> bool:
    """Whether `template` accepts a leading system message (Mistral v0.1/v0.2 do not)."""
    from jinja2.exceptions import TemplateError

    try:
        render(template, _PROBES[0], special_tokens=special_tokens)
    except TemplateError:
        return False
    return True


def _patch_llama3(template: str) -> str | None:
    match = _LLAMA3_MESSAGE_RE.search(template)
    if match is None:
        return None
    q = match.group("q")
    replacement = (
        f"{{%- if message[{q}role{q}] == {q}assistant{q} %}}"
        "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
        f"{{% generation %}}{{{{- message[{q}content{q}] | trim + '<|eot_id|>' }}}}"
        "{% endgeneration %}"
        f"{{%- else %}}{match.group(0)}{{%- endif %}}"
    )
    return template[: match.start()] + replacement + template[match.end() :]


def _patch_chatml(template: str) -> str | None:
    """Render assistant messages through their own branch, with the content and `<|im_end|>`
    inside the markers and the newline that follows the turn outside them."""
    match = _CHATML_MESSAGE_RE.search(template)
    if match is None:
        return None
    q, nl = match.group("q"), match.group("nl")
    content = f"message[{q}content{q}]{match.group('trim') or ''}"
    after = (match.group("nl1") or "") + (match.group("nl2") or "")
    replacement = (
        f"{{%- if message[{q}role{q}] == {q}assistant{q} %}}"
        f"{{{{ '<|im_start|>assistant{nl}' }}}}"
        f"{{% generation %}}{{{{ {content} + '<|im_end|>' }}}}{{% endgeneration %}}"
        + (f"{{{{ '{after}' }}}}" if after else "")
        + f"{{%- else %}}{match.group(0)}{{%- endif %}}"
    )
    return template[: match.start()] + replacement + template[match.end() :]


def _patch_mistral(template: str) -> str | None:
    matches = list(_MISTRAL_ASSISTANT_RE.finditer(template))
    if len(matches) != 1:
        return None
    match = matches[0]
    wrapped = f"{{% generation %}}{match.group(0)}{{% endgeneration %}}"
    return template[: match.start()] + wrapped + template[match.end() :]


def _probe_messages(system: bool) -> list[list[dict[str, str]]]:
    return [p for p in _PROBES if system or p[0]["role"] != "system"]


def verify_training_template(
    original: str, marked: str, *, special_tokens: dict[str, str], end_token: str
) -> str | None:
    """Why `marked` is not a faithful training version of `original` (None when it is)."""
    from jinja2.exceptions import TemplateError

    system = supports_system_role(original, special_tokens=special_tokens)
    for messages in _probe_messages(system):
        try:
            want, _ = render(original, messages, special_tokens=special_tokens)
            got, spans = render(marked, messages, special_tokens=special_tokens, with_spans=True)
        except TemplateError as exc:
            return f"the marked template does not render: {exc}"
        if got != want:
            return "the marked template renders conversations differently from the original"
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        if len(spans) != len(replies):
            return f"expected {len(replies)} marked assistant turns, found {len(spans)}"
        for (start, end), reply in zip(spans, replies, strict=True):
            text = got[start:end].strip()
            if not (text.startswith(reply) and text.endswith(end_token)):
                return f"a marked span holds {text!r}, not the reply and {end_token!r}"
    return None


def training_template(template: str, *, special_tokens: dict[str, str]) -> str:
    """`template` with `{% generation %}` markers, checked against the original.

    Templates that already carry markers are returned as they are. Llama 3.x, Mistral and
    ChatML templates are patched (Llama 3.0's may be replaced by the equivalent marked template);
    any other template without markers raises ChatTemplateError.
    """
    if has_generation_markers(template):
        return template
    family = detect_family(template)
    if family == "llama3":
        candidates = [_patch_llama3(template), LLAMA3_TRAINING_TEMPLATE]
        end_token = "<|eot_id|>"
    elif family == "mistral":
        candidates = [_patch_mistral(template)]
        end_token = special_tokens.get("eos_token", "</s>")
    elif family == "chatml":
        candidates = [_patch_chatml(template)]
        end_token = "<|im_end|>"
    else:
        raise ChatTemplateError(
            "the chat template has no {% generation %} markers and is not a Llama 3.x, "
            "Mistral or ChatML template larrylab can mark; add the markers around the "
            "assistant reply and its end-of-turn token, or train with --full-loss"
        )
    reasons = []
    for candidate in candidates:
        if candidate is None:
            continue
        reason = verify_training_template(
            template, candidate, special_tokens=special_tokens, end_token=end_token
        )
        if reason is None:
            return candidate
        reasons.append(reason)
    detail = "; ".join(reasons) or "its assistant turn was not found"
    raise ChatTemplateError(
        f"cannot add {{% generation %}} markers to this {family} template: {detail}"
    )


def fold_system_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge leading system messages into the first user turn (for templates without system)."""
    system = [m["content"] for m in messages if m["role"] == "system"]
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system and rest and rest[0]["role"] == "user":
        rest[0]["content"] = "\n\n".join([*system, rest[0]["content"]])
    return rest
