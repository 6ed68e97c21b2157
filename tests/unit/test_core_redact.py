"""PII redaction before text is encoded."""

from __future__ import annotations

import pytest

from interest_core.redact import luhn_valid, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+shop@example.co.uk please", "write to [email] please"),
        ("card 4111 1111 1111 1111 ok", "card [card] ok"),
        ("card 4111-1111-1111-1111", "card [card]"),
        ("call +1 (555) 123-4567 now", "call [phone] now"),
        ("call 555-123-4567", "call [phone]"),
        ("jazz vinyl from 1994 under 30 dollars", "jazz vinyl from 1994 under 30 dollars"),
        ("order 12345", "order 12345"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_non_luhn_digits_are_not_cards() -> None:
    assert "[card]" not in redact("ref 4111 1111 1111 1112")


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert not luhn_valid("12a4")
