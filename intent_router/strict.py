"""A body a person writes by hand: a field it does not know is refused, with the one likely meant.

A misspelt ``margn`` in a fine-tune request, or ``treshold`` in a router config, would otherwise be
dropped without a word and the setting meant left at its default.
"""

from __future__ import annotations

from collections.abc import Iterator
from difflib import get_close_matches
from typing import Any, ClassVar

from pydantic import BaseModel, model_validator

from .data import unicode_problem


class ValidUnicode(BaseModel):
    """A body whose every string, at any depth (dict keys too), is valid Unicode. A lone surrogate is
    valid JSON (``"\\ud800"``) but no text a tokenizer, SQLite or a JSON answer can hold: stored, it
    would fail every later read of it, so it is refused here, naming where it is."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        for where, text in _strings(data, ""):
            problem = unicode_problem(text, where or "the body")
            if problem:
                raise ValueError(problem)
        return data


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Each string in ``value`` with where it is: ``text``, ``inputs[1]``, ``metadata.key``, ``a key of metadata``."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                yield f"a key of {where or 'the body'}", key
                yield from _strings(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")


class StrictModel(ValidUnicode):
    field_kind: ClassVar[str] = "field"  # how the message names a field: "router setting", ...
    owner: ClassVar[str] = "this request"  # and what takes the fields: "a router", ...

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = list(cls.model_fields)
            for key in data:
                if key not in known:
                    close = get_close_matches(str(key), known, n=1)
                    meant = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ValueError(f"unknown {cls.field_kind} {key!r}{meant}; {cls.owner} takes {', '.join(known)}")
        return data
