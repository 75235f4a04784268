"""Personal data scrubbing: e-mails, phone numbers and URLs carrying secrets."""

from __future__ import annotations

import pytest

from larrylab.pipeline.manifest import Tally
from larrylab.pipeline.scrub import scrub_messages, scrub_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jo.doe+pws@mail.example.co.uk today", "write to [EMAIL] today"),
        ("call 555-123-4567 or (555) 123-4567", "call [PHONE] or [PHONE]"),
        ("my cell is +44 20 7946 0958.", "my cell is [PHONE]."),
        ("doc: https://x.io/share?token=abc123&v=2 ok", "doc: [URL] ok"),
        ("https://user:pw@host.example/a", "[URL]"),
        ("see https://drive.example.com/d/aB3dE5fG7hJ9kL1mN3pQ5rS7tU9/view", "see [URL]"),
    ],
)
def test_personal_data_is_replaced(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Read https://en.wikipedia.org/wiki/Jobs_to_be_done first.",
        "On 2024-01-15 we sold 1200000 units at 3.14159265 each.",
        "We interviewed 12 nurses in 3 hospitals over 2 weeks.",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert scrub_text(text) == text


def test_messages_are_copied_and_counted() -> None:
    tally = Tally()
    messages = [
        {"role": "user", "content": "I am ana@example.org"},
        {"role": "user", "content": [{"type": "text", "text": "call 555-123-4567"}]},
    ]
    out = scrub_messages(messages, tally)
    assert out[0]["content"] == "I am [EMAIL]" and out[1]["content"][0]["text"] == "call [PHONE]"
    assert messages[0]["content"] == "I am ana@example.org"  # the input is not changed
    assert tally.counts == {"scrubbed_emails": 1, "scrubbed_phones": 1}
