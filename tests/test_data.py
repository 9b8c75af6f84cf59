"""Specification of the data model and loader (intent_router.data).

Every test writes a small real file into ``tmp_path`` and reads it with ``load_dataset``; problems are
checked by file, line and severity, not just by the exception type.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from intent_router.data import (
    DataError,
    Dataset,
    Problem,
    check_trainable,
    load_dataset,
    parse_dataset,
    to_rasa_nlu,
    train_validation_split,
)

ATIS_3CLASS = Path(__file__).resolve().parents[1].parent / "shared/datasets/atis/atis_3class.csv"
BOM = b"\xef\xbb\xbf"
RASA = 'version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    - hi\n    - hello [Bob](name)\n'


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def load_errors(path: Path, **kwargs: object) -> list[Problem]:
    with pytest.raises(DataError) as caught:
        load_dataset(path, **kwargs)
    return caught.value.problems


def located(problems: list[Problem]) -> list[tuple[str, int | None, str]]:
    return [(p.source, p.line, p.severity) for p in problems]


def dataset_with(counts: dict[str, int]) -> Dataset:
    """Examples numbered 1.. in order: label 'a' x counts['a'], then 'b' x counts['b'], ..."""
    labels = [label for label, n in counts.items() for _ in range(n)]
    return Dataset.from_lists([f"utterance {i}" for i in range(len(labels))], labels)


# --- CSV: header detection ----------------------------------------------------------------------------


def test_csv_with_header_is_detected_and_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "text,label\nhi,greet\nbye,farewell\n")

    data = load_dataset(path)

    assert data.texts == ["hi", "bye"]
    assert data.labels == ["greet", "farewell"]
    assert [e.line for e in data.examples] == [2, 3]
    assert data.source == str(path) and data.warnings == []


def test_csv_without_header_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "hi,greet\nbye,farewell\n")

    data = load_dataset(path)

    assert data.texts == ["hi", "bye"]
    assert data.labels == ["greet", "farewell"]
    assert [e.line for e in data.examples] == [1, 2]


@pytest.mark.parametrize("header", ["query,intent", "text,label", "Utterance,Intent", "sentence,class", "example,x"])
def test_common_header_names_are_detected(tmp_path: Path, header: str) -> None:
    path = write(tmp_path, "data.csv", f"{header}\nhi,greet\n")

    data = load_dataset(path)

    assert data.texts == ["hi"]


def test_header_like_first_row_is_data_when_its_label_appears_again(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "example,greet\nhi,greet\n")

    data = load_dataset(path)

    assert data.texts == ["example", "hi"]


def test_header_false_keeps_a_header_like_first_row_as_data(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "text,label\nhi,greet\n")

    data = load_dataset(path, header=False)

    assert data.texts == ["text", "hi"]
    assert data.labels == ["label", "greet"]


def test_header_true_drops_the_first_row_even_when_it_looks_like_data(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "col1,col2\nhi,greet\nbye,farewell\n")

    data = load_dataset(path, header=True)

    assert data.texts == ["hi", "bye"]
    assert [e.line for e in data.examples] == [2, 3]


# --- CSV: encoding, quoting, normalisation ------------------------------------------------------------


def test_utf8_bom_does_not_hide_the_header_or_reach_the_text(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", BOM + "query,intent\ncafé,food\n".encode())

    data = load_dataset(path)

    assert data.texts == ["café"]
    assert data.labels == ["food"]


def test_utf8_bom_without_header_is_not_part_of_the_first_text(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", BOM + b"hi,greet\n")

    data = load_dataset(path)

    assert data.texts == ["hi"]


def test_quoted_field_may_hold_commas_and_newlines(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", '"hi, there\nfriend",greet\nbye,farewell\n')

    data = load_dataset(path)

    assert data.texts == ["hi, there\nfriend", "bye"]
    assert [e.line for e in data.examples] == [1, 3]


def test_line_numbers_after_multiline_fields_point_at_the_rows_first_line(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", '"one\ntwo",greet\n"three\nfour",\nok,greet\n')

    problems = load_errors(path)

    assert located(problems) == [(str(path), 3, "error")]
    assert "empty label" in problems[0].message


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "hi,greet\n\n  \nbye,farewell\n")

    data = load_dataset(path)

    assert [(e.line, e.text) for e in data.examples] == [(1, "hi"), (4, "bye")]


def test_crlf_line_endings_do_not_reach_the_labels(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "text,label\r\nhi,greet\r\nbye,farewell\r\n")

    data = load_dataset(path)

    assert data.labels == ["greet", "farewell"]
    assert [e.line for e in data.examples] == [2, 3]


def test_text_is_nfc_normalised_and_outer_whitespace_stripped(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "  cafe\u0301 au lait \t, food \n")

    data = load_dataset(path)

    assert data.texts == ["caf\u00e9 au lait"]
    assert data.labels == ["food"]


def test_decomposed_and_composed_spellings_are_the_same_text(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "cafe\u0301,food\ncaf\u00e9,food\n")

    data = load_dataset(path)

    assert data.texts == ["caf\u00e9"]
    assert [p.message for p in data.warnings] == ["1 exact duplicate row(s) dropped (lines 2)"]


# --- TSV and format selection -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tsv", ".tab", ".TSV"])
def test_tsv_is_read_by_suffix_and_commas_are_plain_text(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path, f"data{suffix}", "text\tlabel\nhi, there\tgreet\nbye\tfarewell\n")

    data = load_dataset(path)

    assert data.texts == ["hi, there", "bye"]
    assert data.labels == ["greet", "farewell"]


def test_format_argument_overrides_the_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "data.txt", "hi\tgreet\n")

    data = load_dataset(path, format="tsv")

    assert data.texts == ["hi"] and data.labels == ["greet"]


# --- JSONL --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "labels", "key"),
    [
        ({"text": "hi", "label": "a"}, {"a"}, "a"),
        ({"text": "hi", "label": "a+b"}, {"a", "b"}, "a+b"),
        ({"text": "hi", "labels": ["b", "a"]}, {"a", "b"}, "a+b"),
        ({"text": "hi", "labels": [" a "]}, {"a"}, "a"),
    ],
)
def test_jsonl_label_forms(tmp_path: Path, record: dict, labels: set[str], key: str) -> None:
    path = write(tmp_path, "data.jsonl", json.dumps(record) + "\n")

    data = load_dataset(path)

    assert data.label_sets == [frozenset(labels)]
    assert data.labels == [key]
    assert data.texts == ["hi"]


def test_ndjson_suffix_and_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "data.ndjson", '{"text": "hi", "label": "greet"}\n\n{"text": "bye", "label": "farewell"}\n')

    data = load_dataset(path)

    assert [(e.line, e.text, e.label) for e in data.examples] == [(1, "hi", "greet"), (3, "bye", "farewell")]


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ('{"text": "bye", "label": ', "not valid JSON"),
        ('{"label": "farewell"}', 'a string "text"'),
        ('{"text": 5, "label": "farewell"}', 'a string "text"'),
        ('["bye", "farewell"]', 'a string "text"'),
        ('{"text": "bye"}', '"label": "name"'),
        ('{"text": "bye", "label": 5}', '"label": "name"'),
        ('{"text": "bye", "labels": ["farewell", 1]}', '"labels": ["name"'),
    ],
)
def test_jsonl_bad_line_is_an_error_naming_the_line(tmp_path: Path, bad_line: str, expected: str) -> None:
    path = write(tmp_path, "data.jsonl", f'{{"text": "hi", "label": "greet"}}\n{bad_line}\n')

    problems = load_errors(path)

    assert located(problems) == [(str(path), 2, "error")]
    assert expected in problems[0].message


def test_jsonl_text_may_hold_unicode_line_separators(tmp_path: Path) -> None:
    # JSON allows U+2028/U+2029/U+0085 unescaped in strings; json.dumps(ensure_ascii=False) writes them raw.
    records = [{"text": "hi\u2028there\x85you", "label": "greet"}, {"text": "bye", "label": ""}]
    path = write(tmp_path, "data.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

    problems = load_errors(path)

    assert located(problems) == [(str(path), 2, "error")]
    assert "empty label" in problems[0].message


# --- Rasa NLU YAML ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".yml", ".yaml"])
def test_rasa_examples_become_rows_with_their_own_line_numbers(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path, f"nlu{suffix}", RASA)

    data = load_dataset(path)

    assert [(e.line, e.text, e.label) for e in data.examples] == [(5, "hi", "greet"), (6, "hello Bob", "greet")]


def test_rasa_entity_annotations_are_reduced_to_their_text(tmp_path: Path) -> None:
    content = (
        "nlu:\n- intent: fly\n  examples: |\n"
        '    - fly to [Paris]{"entity": "city"} from [NYC](city:New York) on [monday](date)\n'
    )
    path = write(tmp_path, "nlu.yml", content)

    data = load_dataset(path)

    assert data.texts == ["fly to Paris from NYC on monday"]


def test_rasa_synonym_regex_and_lookup_items_are_ignored(tmp_path: Path) -> None:
    content = (
        "nlu:\n"
        "- synonym: New York\n  examples: |\n    - NYC\n"
        "- regex: zipcode\n  examples: |\n    - [0-9]{5}\n"
        "- lookup: city\n  examples: |\n    - Paris\n"
        "- intent: bye\n  examples: |\n    - see you\n"
    )
    path = write(tmp_path, "nlu.yml", content)

    data = load_dataset(path)

    assert [(e.line, e.text, e.label) for e in data.examples] == [(13, "see you", "bye")]


def test_rasa_invalid_yaml_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, "nlu.yml", "nlu:\n- intent: greet\n  examples: [unclosed\n")

    problems = load_errors(path)

    assert len(problems) == 1
    assert problems[0].source == str(path) and problems[0].severity == "error"
    assert problems[0].line == 4
    assert problems[0].message.startswith("not valid YAML")


@pytest.mark.parametrize("content", ['version: "3.1"\nrules: []\n', "- just a list\n", "", "nlu: not a list\n"])
def test_rasa_file_without_an_nlu_list_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, "nlu.yml", content)

    problems = load_errors(path)

    assert located(problems) == [(str(path), None, "error")]
    assert "top-level 'nlu:' list" in problems[0].message


def test_rasa_example_without_a_dash_is_skipped_with_a_warning_as_rasa_does(tmp_path: Path) -> None:
    path = write(tmp_path, "nlu.yml", "nlu:\n- intent: greet\n  examples: |\n    - hi\n    hello\n")

    data = load_dataset(path)

    assert data.texts == ["hi"]
    assert located(data.warnings) == [(str(path), 5, "warning")]
    assert "does not start with '-'" in data.warnings[0].message


def test_rasa_dash_without_a_space_and_empty_examples_are_read_as_rasa_reads_them(tmp_path: Path) -> None:
    content = "nlu:\n- intent: greet\n  examples: |\n    - hi\n    - \n    -\n    -hello\n"
    path = write(tmp_path, "nlu.yml", content)

    data = load_dataset(path)

    assert [(e.line, e.text) for e in data.examples] == [(4, "hi"), (7, "hello")]
    assert located(data.warnings) == [(str(path), 5, "warning"), (str(path), 6, "warning")]
    assert data.warnings[0].message == "empty example skipped"


def test_rasa_examples_with_metadata_are_read_with_their_line_numbers(tmp_path: Path) -> None:
    content = (
        'version: "3.1"\nnlu:\n- intent: greet\n  metadata:\n    sentiment: positive\n  examples:\n'
        "  - text: |\n      hello\n    metadata:\n      sentiment: neutral\n"
        "  - text: good [morning](time)\n"
        "- intent: bye\n  examples: |\n    - see you\n"
    )
    path = write(tmp_path, "nlu.yml", content)

    data = load_dataset(path)

    assert [(e.line, e.text, e.label) for e in data.examples] == [
        (8, "hello", "greet"),
        (11, "good morning", "greet"),
        (14, "see you", "bye"),
    ]
    assert data.warnings == []


def test_rasa_examples_list_item_without_text_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "nlu.yml", "nlu:\n- intent: greet\n  examples:\n  - text: hi\n  - hello\n")

    problems = load_errors(path)

    assert located(problems) == [(str(path), 5, "error")]
    assert "needs 'text:'" in problems[0].message


def test_rasa_intent_without_an_examples_block_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "nlu.yml", "nlu:\n- intent: greet\n  examples: |\n    - hi\n- intent: bye\n")

    problems = load_errors(path)

    assert located(problems) == [(str(path), 5, "error")]
    assert "'examples: |' block or a list of '- text: ...'" in problems[0].message


# --- Rasa NLU export ----------------------------------------------------------------------------------


def test_rasa_export_reads_back_to_the_same_examples(tmp_path: Path) -> None:
    texts = [
        "fares to denver: one way",
        "flights # not a comment",
        "- starts with a dash",
        "he said \"cheap\" and 'fast'",
        "key: value | pipe > more",
        "  {braces} and [brackets] & *stars* !bang %percent @at `tick`",
        "naïve café, 東京 ✈",
        "cheapest flight to boston",
    ]
    labels = ["airfare", "flight", "flight", "airfare", "what: odd #label", "flight", "airfare", "flight+airfare"]
    data = Dataset.from_lists(texts, labels)

    text, warnings = to_rasa_nlu(data)
    exported = write(tmp_path, "nlu.yml", text)

    assert warnings == []
    back = load_dataset(exported)
    assert sorted((e.text, e.labels) for e in back.examples) == sorted((e.text, e.labels) for e in data.examples)
    assert '- intent: "airfare+flight"' in text


def test_rasa_export_of_atis_round_trips(tmp_path: Path) -> None:
    data = load_dataset(ATIS_3CLASS)

    back = load_dataset(write(tmp_path, "nlu.yml", to_rasa_nlu(data)[0]))

    assert Counter((e.text, e.label) for e in back.examples) == Counter((e.text, e.label) for e in data.examples)


def test_rasa_export_turns_line_breaks_into_spaces_and_warns_about_entity_markup() -> None:
    data = Dataset.from_lists(["two\nlines", "fly to [Boston](city)"], ["a", "b"])

    text, warnings = to_rasa_nlu(data)

    assert "    - two lines\n" in text
    assert [(p.line, p.severity) for p in warnings] == [(1, "warning"), (2, "warning")]
    assert "entity" in warnings[1].message


# --- Label sets ---------------------------------------------------------------------------------------


def test_labels_given_in_python_are_read_as_a_file_s_are() -> None:
    data = Dataset.from_lists(["a", "b", "c"], ["caf\u00e9\u200b + tea", [" cafe\u0301 ", "tea"], [" "]])
    assert data.label_sets == [frozenset({"caf\u00e9", "tea"})] * 2 + [frozenset()]  # one spelling; blank: none

    with pytest.raises(DataError) as raised:
        Dataset.from_lists(["a", "b", "c", "d", "e", "f"], [["flight+airfare"], "c++", ["x", 3], 7, None, "ok"])
    assert [p.line for p in raised.value.problems] == [1, 2, 3, 4, 5]
    assert "cannot contain '+'" in raised.value.problems[0].message  # it would read back as two labels


def test_joined_labels_become_a_label_set_with_a_sorted_canonical_name(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "cheapest flight to boston,flight+airfare\n")

    (example,) = load_dataset(path).examples

    assert example.labels == frozenset({"flight", "airfare"})
    assert example.label == "airfare+flight"


def test_label_order_does_not_make_a_new_class(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "one,flight+airfare\ntwo,airfare + flight\nthree,flight\n")

    data = load_dataset(path)

    assert data.labels == ["airfare+flight", "airfare+flight", "flight"]
    assert data.label_counts() == Counter({"airfare+flight": 2, "flight": 1})
    assert data.label_counts(multilabel=True) == Counter({"flight": 3, "airfare": 2})


def test_a_label_spelt_two_ways_or_with_an_invisible_character_is_one_label(tmp_path: Path) -> None:
    csv_path = write(tmp_path, "data.csv", "hi there,caf\u00e9\nyo there,cafe\u0301\nhey,caf\u00e9\u200b+tea\n")
    jsonl_path = write(tmp_path, "data.jsonl", '{"text": "a", "labels": ["cafe\u0301", "t\u200bea "]}\n')

    assert load_dataset(csv_path, multilabel=True).label_counts(multilabel=True) == Counter({"caf\u00e9": 3, "tea": 1})
    assert load_dataset(jsonl_path, multilabel=True).label_sets == [frozenset({"caf\u00e9", "tea"})]


def test_same_text_with_label_order_swapped_is_a_duplicate_not_a_conflict(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "x,flight+airfare\nx,airfare+flight\n")

    data = load_dataset(path)

    assert [(e.line, e.label) for e in data.examples] == [(1, "airfare+flight")]
    assert [p.message for p in data.warnings] == ["1 exact duplicate row(s) dropped (lines 2)"]


# --- Errors -------------------------------------------------------------------------------------------


def test_empty_text_is_an_error_naming_the_line(tmp_path: Path) -> None:
    blank = ['"  "', '"\u200b\ufeff "', "\ufe0f\u034f\u3164"]  # a variation selector, grapheme joiner, filler
    path = write(
        tmp_path, "data.csv", "hi,greet\n" + "".join(f"{text},greet\n" for text in blank) + "ok \u2764\ufe0f,b\n"
    )

    problems = load_errors(path)

    assert located(problems) == [(str(path), line, "error") for line in (2, 3, 4)]  # invisible characters only
    assert all("empty text" in p.message for p in problems)


@pytest.mark.parametrize("label", ["", "  ", "+", '" + "'])
def test_empty_label_is_an_error_for_a_single_label_classifier(tmp_path: Path, label: str) -> None:
    path = write(tmp_path, "data.csv", f"hi,greet\nbye,{label}\n")

    problems = load_errors(path)

    assert located(problems) == [(str(path), 2, "error")]
    assert "empty label" in problems[0].message


def test_empty_label_set_is_allowed_with_multilabel(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "hi,greet\nbye,\n")

    data = load_dataset(path, multilabel=True)

    assert data.label_sets == [frozenset({"greet"}), frozenset()]


@pytest.mark.parametrize("prefix", [b"", BOM], ids=["plain", "with-bom"])
def test_undecodable_bytes_name_their_line(tmp_path: Path, prefix: bytes) -> None:
    path = write(tmp_path, "data.csv", prefix + b"hi,greet\nbye,farewell\n\xff\xfe bad,x\n")

    problems = load_errors(path)

    assert located(problems) == [(str(path), 3, "error")]
    assert "not UTF-8" in problems[0].message


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"], ids=["with-bom", "le", "be"])
def test_a_utf16_file_is_refused_saying_to_save_it_as_utf8(tmp_path: Path, encoding: str) -> None:
    # Without a byte-order mark, ASCII in UTF-16 is valid UTF-8 with a NUL beside each letter: it read
    # as labels such as '\x00g\x00r\x00e\x00e\x00t' (or one column per row), not as an encoding error
    rows = "".join(f"utterance {i},{'greet' if i % 2 else 'bye'}\n" for i in range(40))
    path = write(tmp_path, "data.csv", ("text,label\n" + rows).encode(encoding))

    problems = load_errors(path)

    assert located(problems) == [(str(path), 1, "error")]
    assert "UTF-16" in problems[0].message and "save it as UTF-8" in problems[0].message


def test_a_nul_byte_is_refused_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "data.jsonl", b'{"text": "hi", "label": "greet"}\n{"text": "bye\x00", "label": "x"}\n')

    problems = load_errors(path)

    assert located(problems) == [(str(path), 2, "error")]
    assert "NUL" in problems[0].message and "save it as UTF-8" in problems[0].message


@pytest.mark.parametrize(
    ("name", "content", "hint"),
    [
        ("data.csv", "hi;greet\nbye;farewell\n", "the row holds ';': save a file separated by semicolons"),
        ("data.csv", "hi\tgreet\nbye\tfarewell\n", "the row holds a tab: for a tab-separated file, name it .tsv"),
        ("data.tsv", "hi,greet\nbye,farewell\n", "the row holds ',': for a comma-separated file, name it .csv"),
    ],
    ids=["semicolons", "tabs-in-csv", "commas-in-tsv"],
)
def test_a_row_of_one_column_that_holds_another_separator_says_how_to_read_it(
    tmp_path: Path, name: str, content: str, hint: str
) -> None:
    # Excel saves "CSV" with semicolons in many languages: every row was "only one column", with no hint why
    path = write(tmp_path, name, content)

    problems = load_errors(path)

    assert located(problems) == [(str(path), 1, "error"), (str(path), 2, "error")]
    assert all(p.message.startswith("only one column") and hint in p.message for p in problems)


def test_row_with_one_column_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "hi,greet\nlonely\n")

    problems = load_errors(path)

    assert located(problems) == [(str(path), 2, "error")]
    assert problems[0].message.startswith("only one column")


def test_third_column_is_an_error_suggesting_quotes(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "hi,greet\nwell, bye,farewell\n")

    problems = load_errors(path)

    assert located(problems) == [(str(path), 2, "error")]
    assert problems[0].message.startswith("a third column")
    assert "quote" in problems[0].message


def test_broken_quotes_are_an_error_naming_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", 'hi,greet\n"bye" now,farewell\n')

    problems = load_errors(path)

    assert located(problems) == [(str(path), 2, "error")]
    assert problems[0].message.startswith("malformed CSV") and "check the quotes" in problems[0].message


def test_an_unclosed_quote_is_reported_on_the_row_it_opens(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", 'text,label\n"hi,greet\n' + "bye,farewell\n" * 50)

    problems = load_errors(path)

    assert located(problems) == [(str(path), 2, "error")]
    assert "quote opened on this row is never closed" in problems[0].message


def test_a_text_over_the_csv_field_limit_is_reported_as_too_long(tmp_path: Path) -> None:
    import csv

    limit = csv.field_size_limit()
    path = write(tmp_path, "data.csv", "text,label\nhi,greet\n" + "a" * (limit + 10) + ",long\nbye,farewell\n")

    problems = load_errors(path)

    assert located(problems) == [(str(path), 3, "error")]
    assert f"a text of more than {limit} characters" in problems[0].message
    assert "quote" not in problems[0].message.split(";")[0]


def test_an_unknown_header_read_as_an_example_is_warned_about(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "foo,bar\nhi,greet\nhello,greet\nbye,farewell\n")

    data = load_dataset(path)

    assert data.texts == ["foo", "hi", "hello", "bye"]
    assert located(data.warnings) == [(str(path), 1, "warning")]
    assert "(foo,bar) is read as an example, not a header" in data.warnings[0].message
    assert load_dataset(path, header=True).warnings == [] and load_dataset(path, header=False).warnings == []


def test_a_problem_repeated_on_many_lines_is_listed_ten_times_then_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "".join(f"text {i},label,extra\n" for i in range(30)) + "x,\n")

    problems = load_errors(path)

    assert [p.line for p in problems] == [*range(1, 11), None, 31]
    assert problems[10].message == f"... and 20 more line(s) with: {problems[0].message}"
    assert problems[0].message.startswith("a third column") and "empty label" in problems[11].message


def test_one_text_with_two_labels_is_an_error_listing_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "book it,flight\nother,misc\nbook it,hotel\n")

    problems = load_errors(path)

    assert located(problems) == [(str(path), 3, "error")]
    assert "line 1" in problems[0].message
    assert "'flight'" in problems[0].message and "'hotel'" in problems[0].message
    assert "'flight+hotel'" in problems[0].message


def test_every_bad_line_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "hi,greet\n,greet\nlonely\nbye,\nok,fine\n")

    problems = load_errors(path)

    assert sorted(located(problems)) == [(str(path), 2, "error"), (str(path), 3, "error"), (str(path), 4, "error")]


def test_unknown_format_suffix_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "data.txt", "hi,greet\n")

    problems = load_errors(path)

    assert located(problems) == [(str(path), None, "error")]
    assert "unknown format" in problems[0].message


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"

    problems = load_errors(path)

    assert located(problems) == [(str(path), None, "error")]
    assert problems[0].message == "no such file"


@pytest.mark.parametrize(
    ("name", "content"),
    [("data.csv", ""), ("data.csv", "text,label\n"), ("data.csv", "\n \n"), ("data.jsonl", "\n"), ("data.tsv", "")],
)
def test_file_with_no_rows_is_an_error(tmp_path: Path, name: str, content: str) -> None:
    path = write(tmp_path, name, content)

    problems = load_errors(path)

    assert located(problems) == [(str(path), None, "error")]
    assert problems[0].message == "no examples found"


def test_parse_dataset_rejects_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        parse_dataset("hi,greet\n", format="xml")


def test_problems_print_as_file_line_severity_message() -> None:
    assert str(Problem("a.csv", 3, "empty text")) == "a.csv:3: error: empty text"
    assert str(Problem("a.csv", None, "dropped", "warning")) == "a.csv: warning: dropped"
    assert (
        str(DataError([Problem("a.csv", 3, "empty text")])) == "1 problem(s) in the data:\n  a.csv:3: error: empty text"
    )


# --- Warnings -----------------------------------------------------------------------------------------


def test_exact_duplicates_are_dropped_with_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "hi,greet\nhi,greet\n hi ,greet\nbye,farewell\n")

    data = load_dataset(path)

    assert [(e.line, e.text) for e in data.examples] == [(1, "hi"), (4, "bye")]
    assert data.warnings == [Problem(str(path), None, "2 exact duplicate row(s) dropped (lines 2, 3)", "warning")]


def test_duplicates_are_kept_without_a_warning_when_deduplicate_is_false(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "hi,greet\nhi,greet\nbye,farewell\n")

    data = load_dataset(path, deduplicate=False)

    assert [(e.line, e.text) for e in data.examples] == [(1, "hi"), (2, "hi"), (3, "bye")]
    assert data.warnings == []


# --- check_trainable ----------------------------------------------------------------------------------


def test_enough_balanced_data_is_trainable_without_warnings() -> None:
    assert check_trainable(dataset_with({"a": 16, "b": 16})) == []


def test_fewer_than_32_examples_is_an_error() -> None:
    with pytest.raises(DataError) as caught:
        check_trainable(dataset_with({"a": 16, "b": 15}))

    assert located(caught.value.problems) == [("<memory>", None, "error")]
    assert caught.value.problems[0].message.startswith("31 examples")


def test_a_single_label_is_an_error() -> None:
    with pytest.raises(DataError) as caught:
        check_trainable(dataset_with({"a": 40}))

    assert located(caught.value.problems) == [("<memory>", None, "error")]
    assert "['a']" in caught.value.problems[0].message


def test_a_label_with_one_example_is_an_error_naming_it_and_its_line() -> None:
    with pytest.raises(DataError) as caught:
        check_trainable(dataset_with({"a": 20, "b": 20, "lonely": 1}))

    assert located(caught.value.problems) == [("<memory>", 41, "error")]
    assert "'lonely' has 1 example" in caught.value.problems[0].message


def test_allow_rare_labels_turns_a_one_example_label_into_a_warning() -> None:
    warnings = check_trainable(dataset_with({"a": 20, "b": 20, "lonely": 1}), allow_rare_labels=True)

    assert located(warnings) == [("<memory>", 41, "warning")]
    assert warnings[0].message == "label 'lonely' has 1 example; allowed (rare labels): it trains the head only"


@pytest.mark.parametrize(("count", "warned"), [(2, True), (7, True), (8, False)])
def test_a_label_with_fewer_than_8_examples_is_a_warning_naming_it(count: int, warned: bool) -> None:
    warnings = check_trainable(dataset_with({"a": 20, "b": 20, "few": count}))

    assert located(warnings) == ([("<memory>", 41, "warning")] if warned else [])
    assert all(f"'few' has only {count} examples" in w.message for w in warnings)


def test_many_labels_of_few_examples_are_named_ten_at_a_time_and_the_others_counted() -> None:
    # 10,000 labels of 2 examples each gave 10,000 warning lines (and 10,000 strings in the model's info)
    counts = {f"intent_{i:05d}": 2 for i in range(10_000)}
    warnings = check_trainable(dataset_with(counts))

    assert [w.message for w in warnings[:2]] == [
        "label 'intent_00000' has only 2 examples; 8 or more work better",
        "label 'intent_00001' has only 2 examples; 8 or more work better",
    ]
    assert len(warnings) == 11 and warnings[-1].line is None
    assert warnings[-1].message == "... and 9990 more label(s) with fewer than 8 examples"
    with pytest.raises(DataError) as caught:
        check_trainable(dataset_with({"a": 40} | {f"lonely_{i:02d}": 1 for i in range(30)}))
    assert [p.severity for p in caught.value.problems] == ["error"] * 11
    assert caught.value.problems[-1].message.startswith("... and 20 more label(s) with 1 example: each label needs")


def test_error_from_check_trainable_also_carries_the_warnings() -> None:
    with pytest.raises(DataError) as caught:
        check_trainable(dataset_with({"a": 31, "few": 3, "lonely": 1}))

    assert located(caught.value.problems) == [("<memory>", 35, "error"), ("<memory>", 32, "warning")]


def test_multilabel_check_counts_each_label_on_its_own() -> None:
    data = dataset_with({"a": 20, "b": 20, "a+b": 1})

    assert check_trainable(data, multilabel=True) == []
    with pytest.raises(DataError, match="'a\\+b' has 1 example"):
        check_trainable(data)


# --- train_validation_split ---------------------------------------------------------------------------


def test_split_is_stratified_and_keeps_singletons_in_train() -> None:
    train, valid = train_validation_split(dataset_with({"a": 10, "b": 5, "c": 2, "d": 1}), 0.2, seed=0)

    assert valid.label_counts() == Counter({"a": 2, "b": 1, "c": 1})
    assert train.label_counts() == Counter({"a": 8, "b": 4, "c": 1, "d": 1})


def test_split_is_disjoint_complete_and_keeps_file_order() -> None:
    data = dataset_with({"a": 10, "b": 7, "c": 3})

    train, valid = train_validation_split(data, 0.3, seed=3)

    assert set(train.texts).isdisjoint(valid.texts)
    assert sorted(train.texts + valid.texts) == sorted(data.texts)
    assert [e.line for e in train.examples] == sorted(e.line for e in train.examples)
    assert train.source == "<memory> (train split)" and valid.source == "<memory> (validation split)"


def test_split_is_reproducible_by_seed() -> None:
    data = dataset_with({"a": 20, "b": 20})

    first, second, other = (train_validation_split(data, 0.25, seed=s)[1].texts for s in (7, 7, 8))

    assert first == second
    assert first != other


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_split_fraction_must_be_strictly_between_0_and_1(fraction: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        train_validation_split(dataset_with({"a": 10, "b": 10}), fraction)


# --- Dataset ------------------------------------------------------------------------------------------


def test_checksum_is_stable_and_changes_when_a_label_changes() -> None:
    base = Dataset.from_lists(["hi", "bye"], ["greet", "farewell"])

    same = Dataset.from_lists([" hi ", "bye"], ["greet", "farewell"])
    relabelled = Dataset.from_lists(["hi", "bye"], ["greet", "greet"])

    assert len(base.checksum()) == 64
    assert base.checksum() == same.checksum()
    assert base.checksum() != relabelled.checksum()


def test_checksum_does_not_depend_on_label_order_within_a_set() -> None:
    assert Dataset.from_lists(["x"], ["b+a"]).checksum() == Dataset.from_lists(["x"], [["a", "b"]]).checksum()


def test_from_lists_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        Dataset.from_lists(["hi", "bye"], ["greet"])


def test_from_lists_normalises_texts_and_accepts_joined_or_listed_labels() -> None:
    data = Dataset.from_lists(["  cafe\u0301 ", "fly"], ["food", ["flight", "airfare"]])

    assert [(e.line, e.text, e.label) for e in data.examples] == [
        (1, "caf\u00e9", "food"),
        (2, "fly", "airfare+flight"),
    ]


# --- The shared ATIS file -----------------------------------------------------------------------------


def test_shared_atis_3class_file_loads() -> None:
    assert ATIS_3CLASS.is_file(), f"shared data set missing: {ATIS_3CLASS}"

    data = load_dataset(ATIS_3CLASS)

    assert len(data) == 344
    assert sorted(data.label_counts()) == ["atis_airfare", "atis_airline", "atis_ground_service"]
    assert data.examples[0].line == 2  # line 1 is the detected header
    assert "query" not in data.texts and "intent" not in data.labels


def test_a_jsonl_label_list_entry_cannot_hide_a_label_set(tmp_path: Path) -> None:
    path = write(tmp_path, "data.jsonl", '{"text": "hi", "labels": ["a+b"]}\n')

    with pytest.raises(DataError) as caught:
        load_dataset(path)

    assert [(p.line, p.severity) for p in caught.value.problems] == [(1, "error")]
    assert "cannot contain '+'" in caught.value.problems[0].message


@pytest.mark.parametrize(
    "name, content, line",
    [
        ("data.csv", "hi,greet\nwrite me a loop,c++\n", 2),
        ("data.csv", "hi,greet\nfares and flights,+flight\n", 2),
        ("data.jsonl", '{"text": "hi", "label": "greet"}\n{"text": "a loop", "label": "c++"}\n', 2),
        ("nlu.yml", "nlu:\n- intent: greet\n  examples: |\n    - hi\n- intent: c++\n  examples: |\n    - a loop\n", 5),
    ],
)
def test_a_label_with_an_empty_part_around_the_separator_is_an_error_not_cut(
    tmp_path: Path, name: str, content: str, line: int
) -> None:
    path = write(tmp_path, name, content)

    problems = load_errors(path)

    assert located(problems) == [(str(path), line, "error")]  # was read as the label 'c', or 'flight'
    assert "has an empty part around '+'" in problems[0].message
    assert "rename the label without '+'" in problems[0].message


def test_a_rasa_export_of_characters_yaml_refuses_reads_back():
    data = Dataset.from_lists(["fares\uffff to denver", "a\x85b\x80c"], ["air\uffffline", "x\x85y\x9f"])
    text, warnings = to_rasa_nlu(data)
    back = parse_dataset(text, format="yaml")
    assert [(e.text, e.label) for e in back.examples] == [
        ("fares  to denver", "air\uffffline"),
        ("a b c", "x\x85y\x9f"),
    ]
    assert len(warnings) == 2  # each text changed says so


@pytest.mark.parametrize(
    ("format", "text", "message"),
    [
        ("jsonl", '{"text": "a", "label": ' + "[" * 100_000 + "}", ":1: error: not valid JSON (maximum recursion"),
        (
            "jsonl",
            '{"text": "a", "label": "x", "n": ' + "9" * 5000 + "}",
            ":1: error: not valid JSON (Exceeds the limit",
        ),
        ("jsonl", '{"text": "fares\\ud800", "label": "x"}', ":1: error: the text is not valid Unicode"),
        ("jsonl", '{"text": "fares", "label": "x\\udfff"}', ":1: error: a label is not valid Unicode"),
        ("yaml", "nlu: " + "[" * 100_000, ": error: not valid YAML: nested too deeply"),
        (
            "yaml",
            "nlu:\n- intent: a\n  examples: &a |\n    - hi\n- intent: b\n  examples: *a\n",
            ":5: error: a YAML alias",
        ),
        (
            "yaml",
            "nlu:\n- &i\n  intent: a\n  examples: |\n    - hi\n- *i\n",
            ":2: error: a YAML alias",
        ),  # at the item it names
    ],
)
def test_hostile_files_are_data_errors_not_crashes(format: str, text: str, message: str) -> None:
    with pytest.raises(DataError) as error:
        parse_dataset(text, format=format)
    assert message in str(error.value.problems[0])


def test_utterances_only_keep_commas_they_cannot_split_and_warn_where_they_split(tmp_path: Path) -> None:
    """A log of utterances saved as CSV without a header: a third column, or a label that no training
    reads, is not an error; a file whose rows mix one and two columns says how it was read."""
    path = tmp_path / "log.csv"
    path.write_text("hello, how are you\nset an alarm for 7\nwake me up at six\nI like c, c++\nwell, yes, no\n")
    utterances = load_dataset(path, labelled=False, deduplicate=False)
    assert utterances.texts == ["hello", "set an alarm for 7", "wake me up at six", "I like c", "well, yes, no"]
    [warning] = utterances.warnings
    assert "2 of 5 rows have two columns, read as a text and a label that is ignored (line 1: 'hello' then" in str(
        warning
    )
    assert "quote them or add a header row: text" in str(warning)
    path.write_text("text\nhello, how are you\nwell, yes, no\n")
    assert load_dataset(path, labelled=False).texts == ["hello, how are you", "well, yes, no"]
    path.write_text("book a flight,flight\ncheapest fare,fare\n")  # a labelled file read for its utterances
    assert load_dataset(path, labelled=False).warnings == []
    for table in ("text,label,count\nbook flight 0,flight,3\ncheap fare,fare,1\n", "text,label\nhi, there,greet\n"):
        path.write_text(table)  # a table with a column too many, not a log: refused, not glued into the texts
        with pytest.raises(DataError, match="a third column"):
            load_dataset(path, labelled=False)
    path.write_text("text,label\nhello there\nbook a flight,flight\n")  # a header: no advice to add one
    [warning] = load_dataset(path, labelled=False).warnings
    assert str(warning).endswith("quote them")
