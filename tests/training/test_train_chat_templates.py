"""Generation markers for assistant-only loss: the official Llama 3.x, Mistral and ChatML
(SmolLM2) templates are marked so that they render exactly as before and mark exactly the
assistant replies."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")
trl = pytest.importorskip("trl")

from larrylab.training._chat_templates import (  # noqa: E402
    LLAMA3_TRAINING_TEMPLATE,
    TINY_CHAT_TEMPLATE,
    ChatTemplateError,
    detect_family,
    fold_system_messages,
    has_generation_markers,
    render,
    supports_system_role,
    training_template,
    verify_training_template,
)
from tests.training.factories import MISTRAL_V01, MISTRAL_V03  # noqa: E402

TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
LLAMA = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
MISTRAL = {"bos_token": "<s>", "eos_token": "</s>"}

CONVERSATION = [
    {"role": "system", "content": "You are Larry."},
    {"role": "user", "content": "I want to build an app."},
    {"role": "assistant", "content": "What problem does it solve?"},
    {"role": "user", "content": "Waiting at clinics."},
    {"role": "assistant", "content": "Who waits, and for how long?"},
]


def _marked_text(
    template: str, messages: list[dict[str, str]], tokens: dict[str, str]
) -> list[str]:
    text, spans = render(template, messages, special_tokens=tokens, with_spans=True)
    return [text[a:b] for a, b in spans]


@pytest.mark.parametrize("name", ["llama3_1.jinja", "llama3_2.jinja"])
def test_llama31_and_32_templates_are_marked_in_place(name: str) -> None:
    original = (TRL_TEMPLATES / name).read_text()
    assert not has_generation_markers(original)
    marked = training_template(original, special_tokens=LLAMA)
    assert marked != LLAMA3_TRAINING_TEMPLATE  # patched, keeping the date header and tools
    assert has_generation_markers(marked)
    plain, _ = render(original, CONVERSATION, special_tokens=LLAMA)
    assert render(marked, CONVERSATION, special_tokens=LLAMA)[0] == plain
    assert "Cutting Knowledge Date" in plain
    assert _marked_text(marked, CONVERSATION, LLAMA) == [
        "What problem does it solve?<|eot_id|>",
        "Who waits, and for how long?<|eot_id|>",
    ]


def test_llama30_template_gets_the_equivalent_marked_template() -> None:
    original = (TRL_TEMPLATES / "llama3.jinja").read_text()
    marked = training_template(original, special_tokens=LLAMA)
    assert marked == LLAMA3_TRAINING_TEMPLATE
    for add in (False, True):
        want, _ = render(
            original, CONVERSATION[:2], special_tokens=LLAMA, add_generation_prompt=add
        )
        got, _ = render(marked, CONVERSATION[:2], special_tokens=LLAMA, add_generation_prompt=add)
        assert got == want


def test_mistral_v03_template_is_marked() -> None:
    marked = training_template(MISTRAL_V03, special_tokens=MISTRAL)
    assert render(marked, CONVERSATION, special_tokens=MISTRAL)[0] == (
        "<s>[INST] I want to build an app.[/INST] What problem does it solve?</s>"
        "[INST] You are Larry.\n\nWaiting at clinics.[/INST] Who waits, and for how long?</s>"
    )
    assert _marked_text(marked, CONVERSATION, MISTRAL) == [
        " What problem does it solve?</s>",
        " Who waits, and for how long?</s>",
    ]


def test_mistral_v01_template_is_marked_and_has_no_system_role() -> None:
    assert not supports_system_role(MISTRAL_V01, special_tokens=MISTRAL)
    marked = training_template(MISTRAL_V01, special_tokens=MISTRAL)
    folded = fold_system_messages(CONVERSATION)
    assert folded[0] == {"role": "user", "content": "You are Larry.\n\nI want to build an app."}
    assert _marked_text(marked, folded, MISTRAL) == [
        "What problem does it solve?</s>",
        "Who waits, and for how long?</s>",
    ]


def test_templates_with_markers_are_kept() -> None:
    assert training_template(TINY_CHAT_TEMPLATE, special_tokens={}) is TINY_CHAT_TEMPLATE


def test_unknown_template_without_markers_is_refused() -> None:
    gemma_like = (
        "{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}"
        "<end_of_turn>\n{% endfor %}"
    )
    assert detect_family(gemma_like) is None
    with pytest.raises(ChatTemplateError, match="generation"):
        training_template(gemma_like, special_tokens={})


def test_verification_catches_a_mark_that_leaves_out_the_end_token() -> None:
    plain = TINY_CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    wrong = plain.replace(
        "{{- message['content'] | trim + '<|im_end|>' }}",
        "{% generation %}{{- message['content'] | trim }}{% endgeneration %}{{- '<|im_end|>' }}",
    )
    assert wrong != plain
    reason = verify_training_template(plain, wrong, special_tokens={}, end_token="<|im_end|>")
    assert reason is not None and "<|im_end|>" in reason
    assert (
        verify_training_template(
            plain, TINY_CHAT_TEMPLATE, special_tokens={}, end_token="<|im_end|>"
        )
        is None
    )


def test_families_are_detected() -> None:
    assert detect_family((TRL_TEMPLATES / "llama3_2.jinja").read_text()) == "llama3"
    assert detect_family(MISTRAL_V03) == "mistral"
    assert detect_family(TINY_CHAT_TEMPLATE) == "chatml"


# HuggingFaceTB/SmolLM2-135M-Instruct's template as its GGUF carries it (real newlines inside the
# string literals), and the same template with `\n` escapes as tokenizer_config.json has it.
SMOLLM2_GGUF = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SMOLLM2_ESCAPED = SMOLLM2_GGUF.replace("\n", "\\n")
CHATML = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}


@pytest.mark.parametrize("original", [SMOLLM2_GGUF, SMOLLM2_ESCAPED], ids=["gguf", "escaped"])
def test_smollm2_chatml_template_is_marked_in_place(original: str) -> None:
    assert detect_family(original) == "chatml" and not has_generation_markers(original)
    marked = training_template(original, special_tokens=CHATML)
    assert has_generation_markers(marked)
    for messages in (CONVERSATION, CONVERSATION[1:]):  # with and without a system message
        plain, _ = render(original, messages, special_tokens=CHATML)
        assert render(marked, messages, special_tokens=CHATML)[0] == plain
    assert _marked_text(marked, CONVERSATION, CHATML) == [
        "What problem does it solve?<|im_end|>",
        "Who waits, and for how long?<|im_end|>",
    ]
    prompt, _ = render(marked, CONVERSATION[:2], special_tokens=CHATML, add_generation_prompt=True)
    assert prompt.endswith(
        "<|im_start|>user\nI want to build an app.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chatml_template_with_other_turn_layout_is_refused() -> None:
    # assistant turns rendered without their end token cannot be marked faithfully
    odd = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
        "{{ message['content'] }}{% if message['role'] != 'assistant' %}<|im_end|>{% endif %}"
        "{% endfor %}"
    )
    with pytest.raises(ChatTemplateError, match=r"cannot add .* chatml template"):
        training_template(odd, special_tokens=CHATML)
