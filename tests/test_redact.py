"""Redaction before utterances are stored: e-mails, Luhn-valid card numbers and phone numbers go; the rest stays."""

from __future__ import annotations

import time

import pytest

from intent_router.redact import luhn_valid, redact, redact_id, redact_values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail me at jane.doe+travel@example.co.uk please", "mail me at [EMAIL] please"),
        ("JOHN_SMITH99@Mail.Example.COM", "[EMAIL]"),
        ("a@b.io, c@d.org", "[EMAIL], [EMAIL]"),
    ],
)
def test_email_addresses_are_replaced(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my card is 4111111111111111", "my card is [CARD]"),
        ("4111 1111 1111 1111", "[CARD]"),
        ("4111-1111-1111-1111 exp 12/27", "[CARD] exp 12/27"),
        ("amex 3782 822463 10005", "amex [CARD]"),  # 15 digits in 4-6-5 groups
        ("5105105105105100.", "[CARD]."),
        ("pay with 4222222222222 now", "pay with [CARD] now"),  # 13 digits
        ("6011 0009 9013 9424 and 2 bags", "[CARD] and 2 bags"),
        ("4111 1111 1111 1111 2 tickets", "[CARD] 2 tickets"),  # a number right after the card stays
    ],
)
def test_luhn_valid_card_numbers_are_replaced(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",
        "4111 1111 1111 1112",
        "4111-1111-1111-1112",
        "order 1234567890123456",
        "12345678901234567890123",  # too long for a card
    ],
)
def test_luhn_invalid_long_numbers_are_left_alone(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call +44 20 7946 0958", "call [PHONE]"),
        ("+1 (555) 123-4567", "[PHONE]"),
        ("+33 6 12 34 56 78 after 6", "[PHONE] after 6"),
        ("+49-30-1234567", "[PHONE]"),
        ("+1.555.123.4567", "[PHONE]"),
        ("text +442079460958 now", "text [PHONE] now"),
        ("(555) 123-4567", "[PHONE]"),
        ("555-123-4567", "[PHONE]"),
        ("555.123.4567", "[PHONE]"),
        ("ring 555 123 4567 tomorrow", "ring [PHONE] tomorrow"),
        ("020 7946 0958", "[PHONE]"),
        ("0171-1234567", "[PHONE]"),
        ("06 12 34 56 78", "[PHONE]"),
        ("5551234567", "[PHONE]"),
        ("call 555-1234 now", "call [PHONE] now"),
    ],
)
def test_phone_numbers_are_replaced(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_everything_in_one_utterance() -> None:
    text = "i'm ann@example.com, card 4111 1111 1111 1111, phone +1 555 123 4567, flight 1039"
    assert redact(text) == "i'm [EMAIL], card [CARD], phone [PHONE], flight 1039"


@pytest.mark.parametrize(
    "text",
    [
        "flight 1039 at 838 am",
        "on december 27",
        "under 1100 dollars",
        "ua 270",
        "show me flights from boston to denver on june 12th 1991",
        "i want 2 tickets for 300 dollars on delta 1222",
        "flights 1222 1223 and 1224",
        "flight 838 1039",
        "leaving between 0800 and 1000",
        "leaving 0800 1000",
        "from 2024-01-15 to 01.15.2024",
        "fares for 1999-2003",
        "what is fare code q",
        "american flight 4400 arrives at 1130 pm",
        "the 7.45 train costs 12.50",
        "",
    ],
)
def test_ordinary_utterances_are_unchanged(text: str) -> None:
    assert redact(text) == text


def test_luhn_check() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("79927398710")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call 1-800-555-1234", "call [PHONE]"),
        ("call 1 800 555 1234", "call [PHONE]"),
        ("card 4111.1111.1111.1111", "card [CARD]"),
        ("card 4111  1111  1111  1111", "card [CARD]"),
        ("mail jürgen@münchen.de today", "mail [EMAIL] today"),
    ],
)
def test_common_formats_are_replaced_too(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "flights 1039 1040 1041 1042 1043",  # Luhn-valid as one number, but no card starts with 1
        "fares 100 200 300 400 500 600 700",  # groups of 3 are not how cards are printed
        "on 12.05.2026 at 10.30 for 4.50",
    ],
)
def test_lists_of_numbers_are_not_cards(text: str) -> None:
    assert redact(text) == text


def test_a_long_run_of_short_numbers_is_redacted_in_linear_time() -> None:
    started = time.perf_counter()
    redact(" ".join(["1"] * 10_000) + " " + " ".join(["4444"] * 4_000))  # the old search: hours
    assert time.perf_counter() - started < 2


def test_metadata_values_are_redacted_and_its_keys_kept_apart():
    metadata = {"phone 555-123-4567": 1, "phone 555-987-6543": 2, "said": ["mail jane@example.com", 3, None]}
    assert redact_values(metadata) == {
        "phone 555-123-4567": 1, "phone 555-987-6543": 2, "said": ["mail [EMAIL]", 3, None]
    }  # fmt: skip


def test_an_id_holding_a_phone_number_becomes_one_stable_pseudonym():
    chat = "+447911123456"  # a WhatsApp chat, named by the user's number
    assert redact_id(chat) == redact_id(chat) != redact_id("+447911123457")
    assert redact_id(chat).startswith("redacted-") and "447911" not in redact_id(chat)
    assert redact_id("c-42") == "c-42"
