"""Personal data handling: redaction of contact details from text, pseudonymous ids for logs.

:func:`redact` runs on every rendered prompt (item texts and user prompts, see
:func:`promptrec.prompts.templates.render`), so emails, phone numbers and street addresses never
reach an encoder, local or remote. :func:`pseudonym` turns a user id into a keyed hash for logs.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")
# international (+44 20 7946 0958), North American ((555) 123-4567, 555-123-4567), dotted
# (555.123.4567) and plain runs of digits; a candidate is a phone number when it has 9-15 digits,
# so prices, years, dates and sizes stay
_PHONE = re.compile(
    r"(?<![\w.+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,4}(?![\w.])"
    r"|(?<![\w.+])\+?\d{9,15}(?![\w.])"
)
_STREET_WORDS = (
    "street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|way|"
    "terrace|square|sq|highway|hwy|parkway|pkwy|strasse|straße"
)
# "221B Baker Street", "1600 Pennsylvania Ave NW", "12 rue de Rivoli"
_ADDRESS = re.compile(
    rf"\b\d{{1,5}}[A-Za-z]?\s+(?:[A-Z][\w'-]*\s+){{0,3}}(?:{_STREET_WORDS})\b\.?"
    rf"(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b)?"
    rf"|\b\d{{1,5}}\s+(?:rue|via|calle)\s+(?:\w+\s+){{0,3}}\w+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with emails, phone numbers and street addresses replaced by placeholders.

    Example:
        >>> redact("Call +1 (555) 123-4567 or write to jane@example.com, 221B Baker Street")
        'Call [phone] or write to [email], [address]'
    """
    if not text:
        return text
    text = _EMAIL.sub("[email]", text)
    text = _ADDRESS.sub("[address]", text)
    return _PHONE.sub(_phone, text)


def _phone(match: re.Match[str]) -> str:
    digits = sum(ch.isdigit() for ch in match.group(0))
    return "[phone]" if 9 <= digits <= 15 else match.group(0)


def pseudonym(user_id: str, key: bytes) -> str:
    """A stable, keyed pseudonym of a user id for logs (12 hex digits of HMAC-SHA256)."""
    return hmac.new(key, str(user_id).encode("utf-8"), hashlib.sha256).hexdigest()[:12]
