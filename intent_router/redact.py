"""Replace e-mail addresses, payment card numbers and phone numbers in an utterance before it is stored.

    >>> redact("mail jane.doe@example.com or call +44 20 7946 0958")
    'mail [EMAIL] or call [PHONE]'
    >>> redact("my card is 4111 1111 1111 1111, phone (555) 123-4567")
    'my card is [CARD], phone [PHONE]'
    >>> redact("flight 1039 at 838 am under 1100 dollars")
    'flight 1039 at 838 am under 1100 dollars'

Utterances are full of numbers (flight numbers, times, prices, dates), so the patterns are narrow: a card
must pass the Luhn check, start as the card networks' numbers do (2 to 6) and be printed as cards are
(groups of 4 to 6 digits, the last of 3 or more), and a national phone number must have a phone-like
shape (3-3-4 digits, an area code in parentheses, a leading trunk 0, ...) rather than just enough digits.
Cards are replaced before phones so that a card's digit groups are never half-taken as a phone number.
"""

from __future__ import annotations

import hashlib
import re

EMAIL = "[EMAIL]"
CARD = "[CARD]"
PHONE = "[PHONE]"

# Domains may be internationalised (jürgen@münchen.de): letters and digits of any script.
_EMAIL_PATTERN = re.compile(r"(?<![\w.%+-])[\w.%+-]+@(?:[^\W_]|-)+(?:\.(?:[^\W_]|-)+)*\.[^\W\d_]{2,}\b")

# A run of digit groups joined by one or two spaces, a dash or a dot, not part of a longer number or a
# "+" phone.
_DIGIT_GROUPS_PATTERN = re.compile(r"(?<![\d+])\d+(?:(?: {1,2}|[.-])\d+)*(?!\d)")
_DIGITS_PATTERN = re.compile(r"\d+")
_CARD_DIGITS = range(13, 20)
# The first digit of the card networks' numbers: Mastercard 2 and 5, Amex, Diners and JCB 3, Visa 4,
# Discover and UnionPay 6. A list of flight numbers or prices starting 1, 7, 8, 9 or 0 is left alone.
_CARD_FIRST_DIGITS = "23456"

# Not inside a word or a longer digit sequence ("4111 1111 ..." must not yield "111 1111").
_PHONE_START = r"(?<![\w+])(?<!\d[ .-])"
_PHONE_END = r"(?!\d)(?![ .-]\d)"
_SEPARATOR = r"[ .-]"
_PHONE_PATTERN = re.compile(
    _PHONE_START
    + "(?:"
    # international: +44 20 7946 0958, +1 (555) 123-4567, +33.6.12.34.56.78, +4915112345678
    + rf"\+\d{{1,3}}(?:{_SEPARATOR}?\(?\d{{1,5}}\)?){{1,6}}"
    # area code in parentheses: (555) 123-4567, (020) 7946 0958
    + rf"|\(\d{{2,5}}\){_SEPARATOR}?\d{{2,4}}(?:{_SEPARATOR}?\d{{2,4}}){{0,3}}"
    # North American 3-3-4, with its country code 1 or without: 1-800-555-1234, 555.123.4567, 555 123 4567
    + rf"|(?:1{_SEPARATOR})?\d{{3}}{_SEPARATOR}\d{{3}}{_SEPARATOR}\d{{4}}"
    # leading trunk 0: 020 7946 0958, 0171-1234567, 06 12 34 56 78
    + rf"|0\d{{1,4}}(?:{_SEPARATOR}\d{{2,8}}){{1,4}}"
    # 10 or 11 digits written together: 5551234567, 02079460958
    + r"|\d{10,11}"
    # local 3-4 with a dash or dot (not a space: "flight 838 1039"): 555-1234
    + r"|\d{3}[.-]\d{4}"
    + ")"
    + _PHONE_END
)
_PHONE_DIGITS = range(7, 16)
_TRUNK_PHONE_MIN_DIGITS = 9  # "0800 1000" (two times) is not a phone number


def redact(text: str) -> str:
    """``text`` with e-mail addresses, Luhn-valid card numbers and phone numbers replaced by placeholders."""
    text = _EMAIL_PATTERN.sub(EMAIL, text)
    text = _DIGIT_GROUPS_PATTERN.sub(_redact_cards_in_run, text)
    return _PHONE_PATTERN.sub(_redact_phone, text)


def redact_values(value):
    """``value`` (decoded JSON: a route's metadata) with ``redact`` applied to every string value in it;
    keys (field names), numbers, booleans and null as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [redact_values(item) for item in value]
    if isinstance(value, dict):
        return {key: redact_values(item) for key, item in value.items()}
    return value


def redact_id(identifier: str) -> str:
    """An id (a conversation's) that holds an e-mail address, phone or card number (a WhatsApp chat is
    named by its phone number) as a stable pseudonym, ``redacted-`` and 16 hex digits of its SHA-256:
    the number is gone, but one conversation's rows still share one id. Any other id as it is."""
    if redact(identifier) == identifier:
        return identifier
    return "redacted-" + hashlib.sha256(identifier.encode("utf-8")).hexdigest()[:16]


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies (and 9 in 10 random numbers fail)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _redact_cards_in_run(match: re.Match[str]) -> str:
    """Replace the card numbers in a run of digit groups.

    The run may hold more than the card ("4111 1111 1111 1111 2 tickets"), so look for the longest
    stretch of whole groups, from the left, with 13 to 19 Luhn-valid digits.
    """
    run = match.group()
    groups = list(_DIGITS_PATTERN.finditer(run))
    pieces: list[str] = []
    copied_up_to = 0
    first = 0
    while first < len(groups):
        card_end = _card_ending_at(groups, first)
        if card_end is None:
            first += 1
            continue
        pieces += [run[copied_up_to : groups[first].start()], CARD]
        copied_up_to = groups[card_end].end()
        first = card_end + 1
    pieces.append(run[copied_up_to:])
    return "".join(pieces)


def _card_ending_at(groups: list[re.Match[str]], first: int) -> int | None:
    """The index of the last group of the longest card number starting at group ``first``, if any.

    Cards are printed in groups of 4 to 6 digits (4-4-4-4, 4-6-5; the last may have 3), so groups of
    prices or times ("100 200 300 ...") are not read as one. Only the groups within 19 digits of
    ``first`` are looked at, so a run of many short numbers costs time in proportion to its length.
    """
    if groups[first].group()[0] not in _CARD_FIRST_DIGITS:
        return None
    digits, lengths = "", []
    for last in range(first, len(groups)):
        group = groups[last].group()
        if last > first and (len(group) < 3 or len(groups[last - 1].group()) < 4):
            break
        digits += group
        if len(digits) > _CARD_DIGITS[-1]:
            break
        lengths.append((last, len(digits)))
    for last, length in reversed(lengths):
        if length in _CARD_DIGITS and luhn_valid(digits[:length]):
            return last
    return None


def _redact_phone(match: re.Match[str]) -> str:
    number = match.group()
    digit_count = sum(char.isdigit() for char in number)
    if digit_count not in _PHONE_DIGITS:
        return number
    if number.startswith("0") and digit_count < _TRUNK_PHONE_MIN_DIGITS:
        return number
    return PHONE
