"""Remove personal data from free text before it is encoded or kept.

E-mail addresses become ``[email]``, payment card numbers (13-19 digits, Luhn-checked)
``[card]``, and phone numbers (7-15 digits, optional ``+``, spaces, dots, dashes,
parentheses) ``[phone]``. Digit runs that fail the Luhn check are not cards; other short
numbers (years, prices, quantities) are left alone.
"""

from __future__ import annotations

import re

__all__ = ["luhn_valid", "redact"]

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
_CARD = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d .()-]{5,}\d(?![\d])")


def luhn_valid(digits: str) -> bool:
    """True when the digit string passes the Luhn checksum (payment card numbers do)."""
    if not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[card]" if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group(0)


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = re.sub(r"\D", "", text)
    if not 7 <= len(digits) <= 15:
        return text
    # A bare run of digits without separators or '+' is more likely an id or a number.
    if text.isdigit() and len(digits) < 10:
        return text
    return "[phone]"


def redact(text: str) -> str:
    """``text`` with e-mail addresses, card numbers and phone numbers replaced by
    ``[email]``, ``[card]`` and ``[phone]``."""
    text = _EMAIL.sub("[email]", text)
    text = _CARD.sub(_card, text)
    return _PHONE.sub(_phone, text)
