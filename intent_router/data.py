"""Labelled utterances in: CSV, TSV, JSONL and Rasa NLU YAML, read into one data model.

Every example holds a *set* of labels (ATIS rows such as ``flight+airfare`` carry two). A single-label
classifier treats each distinct set as one class, named by its canonical key (``airfare+flight``).

    >>> data = load_dataset("train.csv")          # raises DataError listing every bad line
    >>> data.warnings                              # duplicates dropped, rare labels, ...
"""

from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import io
import json
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from . import cleaning

LABEL_SEPARATOR = "+"
MIN_EXAMPLES = 32
MIN_EXAMPLES_PER_LABEL = 2
FEW_EXAMPLES_PER_LABEL = 8
SAME_PROBLEM_SHOWN = 10  # lines listed for one problem repeated on many lines; the rest are counted
FORMATS = ("csv", "tsv", "jsonl", "yaml")
_SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".yml": "yaml",
    ".yaml": "yaml",
}
_TEXT_HEADERS = {"text", "texts", "query", "utterance", "utterances", "sentence", "example", "examples"}
_LABEL_HEADERS = {"label", "labels", "intent", "intents", "class", "category", "target"}
_RASA_ENTITY = re.compile(r"\[([^\]]+)\](?:\([^)]*\)|\{[^}]*\})")


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a warning) in a data file, with where it is."""

    source: str
    line: int | None
    message: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.severity}: {self.message}"


class DataError(ValueError):
    """The data cannot be used as it is; ``problems`` lists every reason with its file and line."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        shown = "\n".join(f"  {p}" for p in self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        super().__init__(f"{len(self.problems)} problem(s) in the data:\n{shown}{more}")


@dataclass(frozen=True)
class Example:
    text: str
    labels: frozenset[str]
    line: int | None = None

    @property
    def label(self) -> str:
        """The canonical class name of the label set: its labels sorted and joined by ``+``."""
        return label_key(self.labels)


@dataclass
class Dataset:
    """Examples read from one source, with the warnings met while reading and checking them."""

    examples: list[Example]
    source: str = "<memory>"
    warnings: list[Problem] = field(default_factory=list)
    cleaned_as: int | None = None  # the cleaning version its texts were cleaned with (``cleaned``); None: as read

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.examples]

    @property
    def labels(self) -> list[str]:
        """One canonical class name per example (see ``Example.label``)."""
        return [e.label for e in self.examples]

    @property
    def label_sets(self) -> list[frozenset[str]]:
        return [e.labels for e in self.examples]

    def label_counts(self, multilabel: bool = False) -> Counter[str]:
        """Examples per class, or per single label when ``multilabel``."""
        if multilabel:
            return Counter(label for e in self.examples for label in e.labels)
        return Counter(self.labels)

    def checksum(self) -> str:
        """sha256 of the examples' texts and labels, in order: identifies the data a model saw."""
        digest = hashlib.sha256()
        for e in self.examples:
            digest.update(e.text.encode())
            digest.update(b"\x1f")
            digest.update(e.label.encode())
            digest.update(b"\x1e")
        return digest.hexdigest()

    def cleaned(self, cleaning_version: int = cleaning.VERSION, deduplicate: bool = True) -> Dataset:
        """Every text cleaned as ``clean_text`` models do, once: a dataset cleaned already with this
        version is returned as it is (cleaning twice can change a text: ``&amp;amp;amp;amp;``). A text
        that cleaning empties is a ``DataError``. With ``deduplicate``, the rows are checked again as a
        file is read: rows that cleaning makes the same are dropped (a warning), and the same cleaned
        text with two label sets is a ``DataError`` (models fitted before this check: False)."""
        if self.cleaned_as == cleaning_version:
            return self
        rows, problems = [], []
        for example in self.examples:
            text = normalize_text(example.text, clean=True, cleaning_version=cleaning_version)
            if text:
                rows.append((example.line or 0, text, example.labels))
            else:
                message = f"text {example.text!r} is empty after cleaning (only markup, links or symbols); remove it"
                problems.append(Problem(self.source, example.line, message))
        checked: list[Problem] = []
        if deduplicate:
            examples = _check_rows(rows, self.source, True, True, checked, "duplicate row(s) after cleaning")
        else:
            examples = [Example(text, labels, line or None) for line, text, labels in rows]
        errors = problems + [replace(p, message=f"once cleaned, {p.message}") for p in checked if p.severity == "error"]
        if errors:
            raise DataError(_cap_repeats(errors))
        problems = [p for p in checked if p.severity == "warning"]
        return Dataset(examples, self.source, list(self.warnings) + problems, cleaning_version)

    def subset(self, indices: Iterable[int], source: str | None = None) -> Dataset:
        return Dataset([self.examples[i] for i in indices], source or self.source, cleaned_as=self.cleaned_as)

    @classmethod
    def from_lists(cls, texts: Sequence[str], labels: Sequence[str | Iterable[str]]) -> Dataset:
        """Build a dataset in memory; a label may be ``"a+b"`` or a list of labels (``labels_of``). Labels
        that cannot be read raise ``DataError`` naming the row (from 1), as a file's lines are named."""
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels: give one label per text")
        examples, problems = [], []
        for row, (text, label) in enumerate(zip(texts, labels, strict=True), start=1):
            try:
                examples.append(Example(normalize_text(text), labels_of(label), row))
            except ValueError as err:
                problems.append(Problem("<memory>", row, str(err)))
        if problems:
            raise DataError(_cap_repeats(problems))
        return cls(examples)


def format_from_name(filename: str) -> str | None:
    """The data format a file name's suffix implies, or None."""
    return _SUFFIX_FORMATS.get(Path(filename).suffix.lower())


def label_key(labels: Iterable[str]) -> str:
    return LABEL_SEPARATOR.join(sorted(labels))


def parse_labels(cell: str) -> frozenset[str]:
    return frozenset(name for name in map(label_name, cell.split(LABEL_SEPARATOR)) if name)


def labels_of(value: str | Iterable[str]) -> frozenset[str]:
    """A row's labels from a cell (``"a+b"``) or a list (``["a", "b"]``), each spelled as ``label_name``
    spells it, empty ones dropped; ``ValueError`` says why they cannot be read (``c++``; a list item
    with ``+``, which a cell would read as two labels, or not a string)."""
    if isinstance(value, str):
        problem = label_cell_problem(value)
        if problem:
            raise ValueError(problem)
        return parse_labels(value)
    if not isinstance(value, Iterable):
        raise ValueError(f"label {value!r}: give a string, or a list of strings")
    names = list(value)
    if not all(isinstance(name, str) for name in names):
        raise ValueError(f"labels {names!r}: each label in a list must be a string")
    if any(LABEL_SEPARATOR in name for name in names):
        raise ValueError(f"a label in a list cannot contain {LABEL_SEPARATOR!r}")
    return frozenset(name for name in map(label_name, names) if name)


def first_few(items: Sequence[object]) -> str:
    """Lines or labels for a message: the first ``SAME_PROBLEM_SHOWN``, then a count (there may be thousands)."""
    more = len(items) - SAME_PROBLEM_SHOWN
    return ", ".join(map(str, items[:SAME_PROBLEM_SHOWN])) + (f" and {more} more" if more > 0 else "")


def label_cell_problem(cell: str) -> str | None:
    """Why a label cell cannot be read, or None: ``c++`` would be read as ``c``, its empty parts dropped."""
    names = [label_name(part) for part in cell.split(LABEL_SEPARATOR)]
    if len(names) > 1 and any(names) and not all(names):
        return (
            f"label {cell.strip()!r} has an empty part around {LABEL_SEPARATOR!r}, which joins the labels of a "
            f"multi-intent row; rename the label without {LABEL_SEPARATOR!r}"
        )
    return None


def label_name(name: str) -> str:
    """A label as written in the data, in one spelling: Unicode NFC, no invisible format characters
    (zero-width spaces, joiners, soft hyphens), no outer white space. So "café" typed two ways, or with
    a stray zero-width space, is one label, not two that look the same."""
    name = "".join(c for c in unicodedata.normalize("NFC", name) if unicodedata.category(c) != "Cf")
    return name.strip()


def normalize_text(text: str, clean: bool = False, cleaning_version: int = cleaning.VERSION) -> str:
    """How every text is prepared, the same way at training and inference: Unicode NFC and outer white
    space removed; with ``clean``, also markup, links and stray symbols (see ``cleaning.clean_text``),
    as cleaning version ``cleaning_version`` does it (a model's own: ``IntentClassifier.cleaning_version_``).

    NFC, not NFKC, is the default because it only merges canonically equal spellings (a composed and
    a decomposed "é"), so it never changes what a text says and a model trained before cleaning
    existed sees the same inputs. NFKC also folds compatibility forms ("ｆｕｌｌ" -> "full",
    "x²" -> "x2", "™" -> "TM"), which loses distinctions; it is part of the ``clean`` option.
    """
    text = unicodedata.normalize("NFC", text)
    return cleaning.clean_text(text, cleaning_version) if clean else strip_invisible(text)


def strip_invisible(text: str) -> str:
    """Outer white space and invisible format characters (zero-width spaces, BOM) removed; a text of
    nothing else, or of nothing else and ``IGNORABLE`` characters (a lone variation selector), is empty:
    nothing a person could have meant, whatever tokens a model would make of it. (A variation selector
    after an emoji is kept: it is part of it.)

    A regular expression finds the first and last visible characters: the service strips texts as
    sent, of any length (``truncate``), and a loop over a text of 10 MB of blank took seconds."""
    first = _visible(False).search(text)
    if first is None or _visible(True).search(text, first.start()) is None:
        return ""
    last = _visible(False).search(text[::-1])
    assert last is not None
    return text[first.start() : len(text) - last.start()]


# Unicode's default-ignorable code points that are not format characters (Cf): variation selectors
# (U+FE0F after a character asks for its emoji form), the combining grapheme joiner, Mongolian and
# Khmer marks, Hangul fillers. They show nothing of their own.
IGNORABLE = "\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180d\u180f\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef"


@functools.cache
def _visible(strict: bool) -> re.Pattern[str]:
    """A character neither white space (``str.isspace``, as ``\\s``) nor a format character (Cf), nor
    with ``strict`` one of the ``IGNORABLE``; made on first use, as finding the format characters takes
    about 70 ms."""
    formats = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if unicodedata.category(c) == "Cf")
    return re.compile(f"[^\\s{re.escape(formats)}{IGNORABLE if strict else ''}]")


def unicode_problem(text: str, name: str) -> str | None:
    """Why ``text`` (called ``name``) is not valid Unicode, or None. A lone surrogate is valid JSON
    (``"\\ud800"``) and what Python makes of bytes that are not UTF-8 in a command-line argument, but
    no text a tokenizer can read."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        character = f"U+{ord(text[error.start]):04X}"
        return (
            f"{name} is not valid Unicode: character {error.start} is a lone surrogate ({character}), "
            "from a bad \\u escape or bytes that are not UTF-8"
        )
    return None


def load_dataset(
    path: str | Path,
    *,
    format: str | None = None,
    header: bool | None = None,
    multilabel: bool = False,
    deduplicate: bool = True,
    labelled: bool = True,
) -> Dataset:
    """Read a data file and check every row; raise ``DataError`` listing each bad line.

    ``format`` is taken from the file's suffix unless given (one of ``FORMATS``). For CSV and TSV the
    header row is detected unless ``header`` forces it. Exact duplicates are dropped with a warning
    (keep them with ``deduplicate=False`` to score a test set row for row). ``labelled=False`` reads
    utterances only: a CSV/TSV may have one column, JSONL needs no label, and any label is ignored.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise DataError([Problem(source, None, "no such file")])
    format = format or format_from_name(path.name)
    if format not in FORMATS:
        raise DataError(
            [
                Problem(
                    source,
                    None,
                    f"unknown format; name the file .csv, .tsv, .jsonl or .yml, or pass one of {FORMATS}",
                )
            ]
        )
    return parse_dataset(
        decode_data(path.read_bytes(), source),
        format=format,
        source=source,
        header=header,
        multilabel=multilabel,
        deduplicate=deduplicate,
        labelled=labelled,
    )


def decode_data(raw: bytes, source: str) -> str:
    """A data file's bytes as text: UTF-8, with or without a BOM; anything else is a ``DataError`` that
    says to save the file as UTF-8 (naming UTF-16, which Excel's "Unicode Text" writes, when its
    byte-order mark shows it)."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        message = "the file is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8"
        raise DataError([Problem(source, 1, message)])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        # err.start counts from err.object, which is the input *after* the codec stripped any BOM
        line = err.object[: err.start].count(b"\n") + 1
        raise DataError(
            [Problem(source, line, f"bytes that are not UTF-8 ({err.reason}); save the file as UTF-8")]
        ) from None


def parse_dataset(
    text: str,
    *,
    format: str,
    source: str = "<upload>",
    header: bool | None = None,
    multilabel: bool = False,
    deduplicate: bool = True,
    labelled: bool = True,
) -> Dataset:
    """Like ``load_dataset`` but from text already in memory (an upload, say)."""
    text = text.removeprefix("\ufeff")
    nul = text.find("\x00")
    if nul >= 0:  # UTF-16 without a byte-order mark reads as UTF-8 with a NUL after each ASCII letter
        message = (
            "a NUL character (byte 0), which no text file holds: the file is perhaps UTF-16 or not text; "
            "save it as UTF-8 text"
        )
        raise DataError([Problem(source, text.count("\n", 0, nul) + 1, message)])
    problems: list[Problem] = []
    if format in ("csv", "tsv"):
        rows = _read_delimited(text, "," if format == "csv" else "\t", source, header, problems, labelled)
    elif format == "jsonl":
        rows = _read_jsonl(text, source, problems, labelled)
    elif format == "yaml":
        rows = _read_rasa_yaml(text, source, problems)
    else:
        raise ValueError(f"unknown format {format!r}; use one of {FORMATS}")
    if not labelled:
        rows = _without_empty_texts(rows, source, problems)
    examples = _check_rows(rows, source, multilabel or not labelled, deduplicate, problems)
    if not rows and not problems:
        problems.append(Problem(source, None, "no examples found"))
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise DataError(_cap_repeats(errors))
    return Dataset(examples, source, [p for p in problems if p.severity == "warning"])


# A row as read: (line number, text, labels)
_Row = tuple[int, str, frozenset[str]]


def _without_empty_texts(rows: list[_Row], source: str, problems: list[Problem]) -> list[_Row]:
    """Utterances only (labels dropped); an empty one is skipped with a warning, since a pool of user
    traffic holds some and none of them is worth stopping for (training data keeps them an error)."""
    kept: list[_Row] = []
    skipped: list[int] = []
    for line, utterance, _ in rows:
        if normalize_text(utterance):
            kept.append((line, utterance, frozenset()))
        else:
            skipped.append(line)
    if skipped:
        message = f"{len(skipped)} empty text(s) skipped (lines {first_few(skipped)})"
        problems.append(Problem(source, None, message, "warning"))
    return kept


def _read_delimited(
    text: str, delimiter: str, source: str, header: bool | None, problems: list[Problem], labelled: bool = True
) -> list[_Row]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records: list[tuple[int, list[str]]] = []
    try:
        line = 1
        for record in reader:
            records.append((line, record))
            line = reader.line_num + 1
    except csv.Error as err:
        problems.append(_csv_problem(err, source, delimiter, line, reader.line_num))
    records = [(line, r) for line, r in records if any(cell.strip() for cell in r)]
    # Utterances under a one-column header: a comma (or tab) belongs to the text, not to a label
    one_column = has_header = False
    if records and (header if header is not None else _looks_like_header(records, labelled)):
        one_column = not labelled and len(records[0][1]) == 1
        has_header = True
        records = records[1:]
    elif records and header is None and labelled and _may_be_header(records):
        first_line, first = records[0]
        problems.append(
            Problem(
                source,
                first_line,
                f"the first row ({','.join(first)}) is read as an example, not a header: its label "
                f"{first[1].strip()!r} is on no other row; if it is a header, name its columns text and label "
                "(or force a header: --header, header=True)",
                "warning",
            )
        )
    rows: list[_Row] = []
    split: list[tuple[int, list[str]]] = []  # utterances only: rows read as text then an ignored label
    # utterances without a header, some of one cell: a log of texts, whose commas are the texts' own
    log = not labelled and not has_header and any(len(record) == 1 for _, record in records)
    for line, record in records:
        if one_column or (not labelled and len(record) == 1) or (log and len(record) > 2):
            rows.append((line, delimiter.join(record), frozenset()))
            continue
        if not labelled and len(record) == 2:  # the label is ignored, so it is not checked
            rows.append((line, record[0], frozenset()))
            split.append((line, record))
            continue
        if len(record) != 2:
            what = "a third column" if len(record) > 2 else "only one column"
            hint = "; quote a text that holds the delimiter" if len(record) > 2 else _separator_hint(record, delimiter)
            problems.append(
                Problem(source, line, f"{what}: expected 2 columns, text then label, found {len(record)}{hint}")
            )
            continue
        problem = label_cell_problem(record[1])
        if problem:
            problems.append(Problem(source, line, problem))
            continue
        rows.append((line, record[0], parse_labels(record[1])))
    if split and len(split) < len(rows):  # some rows have one column: the others' commas may be the text's
        line, (text, label) = split[0]
        message = (
            f"{len(split)} of {len(rows)} rows have two columns, read as a text and a label that is ignored "
            f"(line {line}: {text!r} then {label!r}); if the {_name(delimiter)}'s delimiter belongs to the "
            "texts, quote them" + ("" if has_header else " or add a header row: text")
        )
        problems.append(Problem(source, None, message, "warning"))
    return rows


def _separator_hint(record: list[str], delimiter: str) -> str:
    """How to read a one-column row that holds another separator: the file is likely separated by it."""
    cell = "".join(record)
    if delimiter == "," and "\t" in cell:
        return "; the row holds a tab: for a tab-separated file, name it .tsv or pass --format tsv (format=tsv)"
    if delimiter == "," and ";" in cell:
        return "; the row holds ';': save a file separated by semicolons (as Excel does in some languages) with commas"
    if delimiter == "\t" and "," in cell:
        return "; the row holds ',': for a comma-separated file, name it .csv or pass --format csv (format=csv)"
    return ""


def _name(delimiter: str) -> str:
    return "CSV" if delimiter == "," else "TSV"


def _csv_problem(err: csv.Error, source: str, delimiter: str, record_line: int, reader_line: int) -> Problem:
    """Where and what: a text too long, or a quote never closed, are reported at the row they start on."""
    if "field larger than field limit" in str(err):
        message = (
            f"a text of more than {csv.field_size_limit()} characters starts on this row; shorten it "
            "(or close its quote, if it was meant to end sooner)"
        )
        return Problem(source, record_line, message)
    if "unexpected end of data" in str(err):
        message = "a quote opened on this row is never closed; close it, or double a quote inside a quoted text"
        return Problem(source, record_line, message)
    return Problem(source, reader_line, f"malformed {_name(delimiter)} ({err}); check the quotes")


def _may_be_header(records: list[tuple[int, list[str]]]) -> bool:
    """A first row of two cells whose label is on no other row: a header with unknown names, perhaps."""
    first = records[0][1]
    if len(first) != 2 or len(records) < 3:
        return False
    label = first[1].strip().lower()
    return not any(len(r) == 2 and r[1].strip().lower() == label for _, r in records[1:])


def _cap_repeats(problems: list[Problem]) -> list[Problem]:
    """A problem repeated on many lines: the first few, then one line counting the others."""
    total = Counter(problem.message for problem in problems)
    seen: Counter[str] = Counter()
    capped = []
    for problem in problems:
        seen[problem.message] += 1
        if seen[problem.message] <= SAME_PROBLEM_SHOWN:
            capped.append(problem)
        elif seen[problem.message] == SAME_PROBLEM_SHOWN + 1:
            more = total[problem.message] - SAME_PROBLEM_SHOWN
            capped.append(Problem(problem.source, None, f"... and {more} more line(s) with: {problem.message}"))
    return capped


def _looks_like_header(records: list[tuple[int, list[str]]], labelled: bool = True) -> bool:
    first = records[0][1]
    if not labelled and len(first) == 1:  # a column of utterances
        return first[0].strip().lower() in _TEXT_HEADERS
    if len(first) != 2:
        return False
    text_cell, label_cell = (cell.strip().lower() for cell in first)
    label_used_elsewhere = any(len(r) == 2 and r[1].strip().lower() == label_cell for _, r in records[1:])
    return (text_cell in _TEXT_HEADERS or label_cell in _LABEL_HEADERS) and not label_used_elsewhere


def _read_jsonl(text: str, source: str, problems: list[Problem], labelled: bool = True) -> list[_Row]:
    rows: list[_Row] = []
    # Split on line endings only: str.splitlines() also splits at U+2028, U+2029 and U+0085, which
    # JSON allows unescaped inside strings (json.dumps(..., ensure_ascii=False) writes them raw).
    for line, content in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        if not content.strip():
            continue
        try:
            record = json.loads(content)
        except (ValueError, RecursionError) as err:  # also a number over Python's digit limit, deep nesting
            reason = err.msg if isinstance(err, json.JSONDecodeError) else str(err) or type(err).__name__
            problems.append(Problem(source, line, f"not valid JSON ({reason}); one object per line"))
            continue
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            problems.append(Problem(source, line, 'expected an object with a string "text"'))
            continue
        if not labelled:
            rows.append((line, record["text"], frozenset()))
            continue
        value = record.get("label")
        if not isinstance(value, str):
            value = record.get("labels")
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                problems.append(Problem(source, line, 'expected "label": "name" or "labels": ["name", ...]'))
                continue
        try:
            rows.append((line, record["text"], labels_of(value)))
        except ValueError as err:
            problems.append(Problem(source, line, str(err)))
    return rows


def _read_rasa_yaml(text: str, source: str, problems: list[Problem]) -> list[_Row]:
    try:
        document = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problems.append(Problem(source, mark.line + 1 if mark else None, f"not valid YAML: {err}"))
        return []
    except RecursionError:
        problems.append(Problem(source, None, "not valid YAML: nested too deeply"))
        return []
    nlu = _mapping_get(document, "nlu")
    if not isinstance(nlu, yaml.SequenceNode):
        problems.append(Problem(source, None, "expected a Rasa NLU file with a top-level 'nlu:' list"))
        return []
    rows: list[_Row] = []
    read: set[int] = set()  # the nodes read: a YAML alias (*name) is the node it names, again
    for item in nlu.value:
        intent = _mapping_get(item, "intent")
        if intent is None:
            continue  # synonyms, regexes and lookups carry no labelled examples
        block = _mapping_get(item, "examples")
        if id(item) in read or id(block) in read:  # 2,000 aliases of 2,000 examples: 4 million rows
            problems.append(
                Problem(source, item.start_mark.line + 1, "a YAML alias repeats an intent's examples; write them out")
            )
            return []
        read.update((id(item), id(block)))
        if isinstance(intent, yaml.ScalarNode) and isinstance(block, yaml.ScalarNode):
            examples = _rasa_block_examples(block, source, problems)
        elif isinstance(intent, yaml.ScalarNode) and isinstance(block, yaml.SequenceNode):
            examples = _rasa_list_examples(block, source, problems)
        else:
            problems.append(
                Problem(
                    source,
                    item.start_mark.line + 1,
                    "an intent needs a name and its examples: an 'examples: |' block or a list of '- text: ...'",
                )
            )
            continue
        problem = label_cell_problem(intent.value)
        if problem:
            problems.append(Problem(source, item.start_mark.line + 1, problem))
            continue
        for line, utterance in examples:
            if not utterance:
                problems.append(Problem(source, line, "empty example skipped", "warning"))
                continue
            rows.append((line, _RASA_ENTITY.sub(r"\1", utterance), parse_labels(intent.value)))
    return rows


def _rasa_block_examples(block: yaml.ScalarNode, source: str, problems: list[Problem]) -> list[tuple[int, str]]:
    """Each line of an ``examples: |`` block that starts with ``-``, without it, as Rasa reads them:
    Rasa skips (with a warning) a line without the ``-``, and reads ``-hello`` as ``hello``."""
    first_line = block.start_mark.line + (2 if block.style == "|" else 1)
    examples = []
    for offset, content in enumerate(block.value.splitlines()):
        if not content.strip():
            continue
        if not content.startswith("-"):
            problems.append(
                Problem(source, first_line + offset, "an example that does not start with '-' is skipped", "warning")
            )
            continue
        examples.append((first_line + offset, content[1:].strip()))
    return examples


def _rasa_list_examples(block: yaml.SequenceNode, source: str, problems: list[Problem]) -> list[tuple[int, str]]:
    """The texts of an examples list, Rasa's form for examples with metadata (which is not kept here)::

    examples:
    - text: |
        hello
      metadata:
        sentiment: neutral
    """
    examples = []
    for item in block.value:
        text = _mapping_get(item, "text")
        if not isinstance(text, yaml.ScalarNode):
            problems.append(Problem(source, item.start_mark.line + 1, "an item of an examples list needs 'text:'"))
            continue
        examples.append((text.start_mark.line + (2 if text.style == "|" else 1), text.value.strip()))
    return examples


# Characters a one-line example of a Rasa block cannot hold: line breaks (YAML's and Python's
# splitlines', which Rasa uses) and the characters YAML refuses anywhere in a file (controls,
# surrogates, U+FFFE and U+FFFF).
_NOT_IN_RASA_EXAMPLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]+")
# What YAML refuses raw in a file, escaped in a double-quoted name instead (as \uXXXX).
_NOT_RAW_IN_YAML = re.compile(r"[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")


def to_rasa_nlu(dataset: Dataset) -> tuple[str, list[Problem]]:
    """Rasa NLU YAML of the examples, one intent per class in first-seen order, and its warnings.

    ``parse_dataset`` reads it back to the same examples. Multi-label classes keep their ``+`` name
    (``airfare+flight``). Each example is one line of a literal block, so quotes, ``:``, ``#`` and a
    leading ``-`` need no escaping; line breaks inside a text become spaces (warned), and text that
    looks like Rasa's entity markup ``[x](y)`` is warned about, since Rasa would read an entity.

        >>> text, warnings = to_rasa_nlu(load_dataset("train.csv"))
    """
    one_line, warnings = one_line_texts(dataset)
    intents: dict[str, list[str]] = {}
    for example in one_line.examples:
        if _RASA_ENTITY.search(example.text):
            warnings.append(Problem(dataset.source, example.line, "Rasa reads [text](name) as an entity", "warning"))
        intents.setdefault(example.label, []).append(example.text)
    warnings.sort(key=lambda problem: problem.line or 0)  # each example's warnings together, in order
    lines = ['version: "3.1"', "nlu:"]
    for label, texts in intents.items():
        name = _NOT_RAW_IN_YAML.sub(lambda c: f"\\u{ord(c.group()):04x}", json.dumps(label, ensure_ascii=False))
        lines += [f"- intent: {name}", "  examples: |"]
        lines += [f"    - {text}" for text in texts]
    return "\n".join(lines) + "\n", warnings


def one_line_texts(dataset: Dataset) -> tuple[Dataset, list[Problem]]:
    """The examples with each text on one line that any data file holds (a Rasa example, a CSV cell):
    line breaks and control characters (NUL, ESC, C1) became spaces, as did what YAML refuses
    (surrogates, U+FFFE, U+FFFF); a warning for each text changed. A NUL written raw would make the
    file unreadable ("perhaps UTF-16"), and an ESC would become training text. A text left empty so, or
    the same as an earlier one (which a data file holds once, with one label), is left out, with a warning."""
    examples: list[Example] = []
    warnings: list[Problem] = []
    first: dict[str, Example] = {}
    changed: set[str] = set()  # texts this made: one the same as another is a row this made twice
    for example in dataset.examples:
        text = normalize_text(_NOT_IN_RASA_EXAMPLE.sub(" ", example.text))
        earlier = first.get(text)
        if not text:
            message = "only line breaks or control characters: left out"
        elif earlier is not None and (text != example.text or text in changed):
            message = f"the same as another text once on one line (intent {earlier.label!r}): left out"
        else:
            first.setdefault(text, example)
            examples.append(replace(example, text=text))
            if text == example.text:
                continue
            changed.add(text)
            message = "line breaks or control characters became spaces"
        warnings.append(Problem(dataset.source, example.line, message, "warning"))
    return Dataset(examples, dataset.source, list(dataset.warnings)), warnings


def _mapping_get(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return value_node
    return None


def _check_rows(
    rows: list[_Row],
    source: str,
    multilabel: bool,
    deduplicate: bool,
    problems: list[Problem],
    duplicates_are: str = "exact duplicate row(s)",
) -> list[Example]:
    examples: list[Example] = []
    first_seen: dict[str, Example] = {}
    duplicates: list[int] = []
    for line, raw_text, labels in rows:
        invalid = unicode_problem(raw_text, "the text") or next(
            filter(None, (unicode_problem(x, "a label") for x in labels)), None
        )
        if invalid:  # a lone surrogate, from a JSON or YAML escape: no tokenizer reads it, no response can hold it
            problems.append(Problem(source, line, invalid))
            continue
        text = normalize_text(raw_text)
        if not text:
            problems.append(Problem(source, line, "empty text; every row needs an utterance"))
            continue
        if not labels and not multilabel:
            problems.append(Problem(source, line, "empty label; every row needs a label (or train with multilabel)"))
            continue
        example = Example(text, labels, line)
        earlier = first_seen.get(text)
        if earlier is None:
            first_seen[text] = example
            examples.append(example)
        elif earlier.labels == labels:
            duplicates.append(line)
            if not deduplicate:
                examples.append(example)
        else:
            joined = label_key(earlier.labels | labels)
            message = (
                f"text also on line {earlier.line} with label {earlier.label!r} but here {example.label!r}; "
                f"keep one label, or join them as {joined!r}"
            )
            problems.append(Problem(source, line, message))
    if duplicates and deduplicate:
        shown = ", ".join(str(n) for n in duplicates[:10]) + (", ..." if len(duplicates) > 10 else "")
        message = f"{len(duplicates)} {duplicates_are} dropped (lines {shown})"
        problems.append(Problem(source, None, message, "warning"))
    return examples


def check_trainable(dataset: Dataset, *, multilabel: bool = False, allow_rare_labels: bool = False) -> list[Problem]:
    """Check a dataset is enough to train on; return warnings, raise ``DataError`` for what cannot work.

    Needs ``MIN_EXAMPLES`` examples, two labels and ``MIN_EXAMPLES_PER_LABEL`` examples of each label
    (``allow_rare_labels`` turns that last error into a warning: such labels then only train the head).
    """
    source = dataset.source
    errors: list[Problem] = []
    warnings: list[Problem] = []
    if len(dataset) < MIN_EXAMPLES:
        errors.append(Problem(source, None, f"{len(dataset)} examples; fine-tuning needs at least {MIN_EXAMPLES}"))
    counts = dataset.label_counts(multilabel)
    if len(counts) < 2:
        errors.append(Problem(source, None, f"{len(counts)} label(s) {sorted(counts)}; a classifier needs at least 2"))
    first_line: dict[str, int | None] = {}
    for e in dataset.examples:
        for name in e.labels if multilabel else [e.label]:
            first_line.setdefault(name, e.line)
    rare: list[Problem] = []
    few: list[Problem] = []
    rare_fix = (
        f"each label needs at least {MIN_EXAMPLES_PER_LABEL} (add examples, remove its rows, or allow rare labels: "
        "--allow-rare-labels, allow_rare_labels=True)"
    )
    allowed = "allowed (rare labels): it trains the head only"
    for name, count in sorted(counts.items()):
        if count < MIN_EXAMPLES_PER_LABEL:
            message = f"label {name!r} has {count} example; {allowed if allow_rare_labels else rare_fix}"
            rare.append(Problem(source, first_line[name], message, "warning" if allow_rare_labels else "error"))
        elif count < FEW_EXAMPLES_PER_LABEL:
            message = f"label {name!r} has only {count} examples; {FEW_EXAMPLES_PER_LABEL} or more work better"
            few.append(Problem(source, first_line[name], message, "warning"))
    # 10,000 labels of few examples each: the first few named, the others counted, not 10,000 lines
    rare = _cap_labels(rare, f"with 1 example: {allowed if allow_rare_labels else rare_fix}")
    few = _cap_labels(few, f"with fewer than {FEW_EXAMPLES_PER_LABEL} examples")
    errors += [p for p in rare if p.severity == "error"]
    warnings += [p for p in rare if p.severity == "warning"] + few
    if errors:
        raise DataError(errors + warnings)
    return warnings


def _cap_labels(problems: list[Problem], what: str) -> list[Problem]:
    """The first ``SAME_PROBLEM_SHOWN`` of one problem met by many labels, then one counting the others."""
    if len(problems) <= SAME_PROBLEM_SHOWN:
        return problems
    rest = len(problems) - SAME_PROBLEM_SHOWN
    severity = problems[0].severity
    summary = Problem(problems[0].source, None, f"... and {rest} more label(s) {what}", severity)
    return problems[:SAME_PROBLEM_SHOWN] + [summary]


# How two utterances are joined into a synthetic multi-intent one (see ``synthetic_multi_intent``).
CONNECTORS = (" and ", " and also ", ", also ", " as well as ", ". also ")
SYNTHETIC_MIN_LABEL_SHARE = 0.02  # synthetic rows join only labels on at least this share of the rows


def synthetic_multi_intent(
    dataset: Dataset, count: int, seed: int = 0, min_label_share: float = SYNTHETIC_MIN_LABEL_SHARE
) -> Dataset:
    """``count`` synthetic multi-intent examples made from ``dataset``'s single-label examples.

    Each joins two utterances of different labels with a connector (``"X and Y"``, ``"X, also Y"``,
    ...; MixATIS builds its multi-intent data the same way) and carries the union of their labels.
    The first utterance is drawn uniformly from the single-label examples, the second uniformly from
    those of another label, so the pairs follow the data's label frequencies. Only labels on at least
    ``min_label_share`` of the examples take part: a rare label's few utterances would come back in
    many synthetic rows, and its one-vs-rest head learned from those repeats to fire on single-label
    utterances (on ATIS, validation lost 5 to 11 more sets with every label than with the frequent
    ones). Seeded: the same data, count and seed give the same examples. Pairs already drawn and
    texts already in ``dataset`` are skipped; fewer than ``count`` come back only when the data
    cannot make that many. The examples have no line number. Meant for training data only: never for
    the split that scores a model.
    """
    counts = dataset.label_counts(multilabel=True)
    frequent = {label for label, n in counts.items() if n >= min_label_share * len(dataset)}
    single = [e for e in dataset.examples if len(e.labels) == 1 and e.labels <= frequent]
    if count <= 0 or len({e.labels for e in single}) < 2:
        return Dataset([], f"{dataset.source} (synthetic multi-intent)")
    rng = np.random.default_rng(seed)
    others = {labels: [i for i, e in enumerate(single) if e.labels != labels] for labels in {e.labels for e in single}}
    known = set(dataset.texts)
    seen: set[tuple[int, int]] = set()
    examples: list[Example] = []
    for _ in range(20 * count):  # a bounded number of draws, in case few distinct pairs exist
        if len(examples) == count:
            break
        first = int(rng.integers(len(single)))
        candidates = others[single[first].labels]
        second = candidates[int(rng.integers(len(candidates)))]
        connector = CONNECTORS[int(rng.integers(len(CONNECTORS)))]
        text = single[first].text.rstrip(" .?!,") + connector + single[second].text
        if (first, second) in seen or text in known:
            continue
        seen.add((first, second))
        known.add(text)
        examples.append(Example(text, single[first].labels | single[second].labels))
    return Dataset(examples, f"{dataset.source} (synthetic multi-intent)")


def train_validation_split(
    dataset: Dataset, validation_fraction: float = 0.2, seed: int = 0
) -> tuple[Dataset, Dataset]:
    """Stratified split: each class with at least 2 examples puts at least one in validation."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction is {validation_fraction}; give a number between 0 and 1")
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(dataset.labels):
        by_label.setdefault(label, []).append(index)
    train_idx: list[int] = []
    valid_idx: list[int] = []
    for label in sorted(by_label):
        indices = by_label[label]
        order = rng.permutation(len(indices))
        n_valid = 0 if len(indices) < 2 else min(len(indices) - 1, max(1, round(validation_fraction * len(indices))))
        valid_idx += [indices[i] for i in order[:n_valid]]
        train_idx += [indices[i] for i in order[n_valid:]]
    return (
        dataset.subset(sorted(train_idx), f"{dataset.source} (train split)"),
        dataset.subset(sorted(valid_idx), f"{dataset.source} (validation split)"),
    )
