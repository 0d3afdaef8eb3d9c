"""The one line reader behind every data format (BEIR, MS MARCO, document files, pairs, Wikipedia dumps), and
the one JSONL writer.

Every reader of a text file goes through :func:`iter_lines` (``.gz`` too), JSONL through :func:`iter_jsonl`,
and the fields of a record through :func:`record_id` and :func:`text_field`: so bytes that are not UTF-8,
malformed JSON, a missing, null or mistyped field, a lone surrogate or a NUL are one :class:`DataFormatError`
naming the file and the line,
never a traceback, and every format applies the same rule to the same field.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ragcun.paths import missing


class DataFormatError(ValueError):
    """A data file is malformed. The message names the file and, where it applies, the line."""

    def __init__(self, path: str | os.PathLike, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


def regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` if it is a regular file; a missing path, a folder, /dev/null or a FIFO is a one-line error
    (``what`` names the missing file: "corpus file not found: …")."""
    path = Path(path)
    if not path.is_file():
        if path.exists():  # it exists, but is no file of lines
            raise DataFormatError(path, f"not a regular file (expected the {what})")
        raise missing(path, what)
    return path


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield (line number, line without its line ending) for each line of a text file (``.gz`` too).

    The one line reader behind every data format: bytes that are not UTF-8 are an error naming the
    file and the line, never a traceback.
    """
    path = regular_file(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataFormatError(path, f"not UTF-8 text (byte {raw[exc.start]:#04x} at column "
                                                f"{exc.start + 1})", lineno) from None
                yield lineno, line.rstrip("\r\n")
    except (OSError, EOFError, zlib.error) as exc:  # a truncated or corrupt .gz, an unreadable file
        raise DataFormatError(path, f"cannot be read ({exc})") from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSONL(.gz) file; malformed JSON names file
    and line."""
    path = Path(path)
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(path, f"malformed JSON ({exc.msg} at column {exc.colno})", lineno) from None
        if not isinstance(obj, dict):
            raise DataFormatError(path, f"expected a JSON object, got {type(obj).__name__}", lineno)
        yield lineno, obj


def text_problem(text: str) -> str | None:
    """What makes ``text`` unreadable by a tokenizer, or None: a lone surrogate (JSON's ``"\\ud800"`` decodes
    to one; it has no UTF-8 form) or a NUL character."""
    if "\x00" in text:
        return "holds a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        at = exc.start
        return f"holds a lone surrogate (U+{ord(text[at]):04X} at character {at + 1}): no Unicode text"
    return None


def record_id(path: Path, lineno: int, obj: dict[str, Any], key: str = "_id",
              required: bool = True) -> str | None:
    """The id field of one record: a non-empty string or an integer (never a float, bool, list or null;
    an optional id may be left out, not set to null)."""
    value = obj.get(key)
    if value is None:
        if key in obj:
            raise DataFormatError(path, f"`{key}` is null: give an id, or leave the field out"
                                        f"{'' if required else ' to have one generated'}", lineno)
        if required:
            raise DataFormatError(path, f"missing `{key}`", lineno)
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataFormatError(path, f"`{key}` must be a string or an integer, got {type(value).__name__} "
                                    f"{value!r}", lineno)
    _id = str(value)
    if not _id.strip():
        raise DataFormatError(path, f"empty `{key}`", lineno)
    problem = text_problem(_id)
    if problem:
        raise DataFormatError(path, f"`{key}` {problem}", lineno)
    return _id


def text_field(path: Path, lineno: int, obj: dict[str, Any], key: str, required: bool = True) -> str:
    """A text field of one record: a string (an absent optional field is ""). Numbers, lists, objects and
    null are errors, never turned into their repr: the rule for every corpus, query and document file."""
    if key not in obj:
        if required:
            raise DataFormatError(path, f"no `{key}` field", lineno)
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise DataFormatError(path, f"`{key}` must be a string, got "
                                    f"{'null' if value is None else type(value).__name__}", lineno)
    problem = text_problem(value)
    if problem:
        raise DataFormatError(path, f"`{key}` {problem}", lineno)
    return value


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Write ``records`` one JSON object a line (UTF-8, non-ASCII kept as is). Callers write into a folder
    they publish atomically (:func:`ragcun.files.atomic_path`)."""
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
