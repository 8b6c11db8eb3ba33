"""Reading tables: record files (JSONL / JSON / CSV) with 1-based line numbers, and evaluation prompt files.

Formats, chosen by extension: ``.jsonl`` (one JSON object per line), ``.json`` (JSON lines, or one
JSON array of objects), ``.csv`` (header row + records). Files must be UTF-8 (a BOM is accepted);
UTF-16/UTF-32 (byte-order mark or NUL-interleaved text) and gzip/zip archives are named as such. A JSON
record with the same key twice is refused (a reader would silently keep the last value).
Every malformed input raises :class:`~safepatching.errors.DataError` naming the file, the 1-based
line (JSON lines, CSV) or element (JSON array) and the rule that was broken.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import DataError

SUFFIXES = (".jsonl", ".json", ".csv")


# (magic bytes, what the file is); longest first: the UTF-32 LE mark begins with the UTF-16 LE one
RESAVE = "; re-save the file as UTF-8"
_NOT_UTF8 = ((b"\xff\xfe\x00\x00", "UTF-32 text (little-endian byte-order mark FF FE 00 00)" + RESAVE),
             (b"\x00\x00\xfe\xff", "UTF-32 text (big-endian byte-order mark 00 00 FE FF)" + RESAVE),
             (b"\xff\xfe", "UTF-16 text (little-endian byte-order mark FF FE)" + RESAVE),
             (b"\xfe\xff", "UTF-16 text (big-endian byte-order mark FE FF)" + RESAVE),
             (b"\x1f\x8b", "a gzip-compressed file (magic bytes 1F 8B): decompress it (gunzip) and hand over the "
                            "plain file"),
             (b"PK\x03\x04", "a zip archive (magic bytes 50 4B 03 04): extract it and hand over the plain file"))


def _encoding_problem(data: bytes) -> str | None:
    """What a file that is not UTF-8 text is, when its first bytes say so: a byte-order mark, archive magic, or
    UTF-16 without a mark (every other byte of the start NUL); None otherwise."""
    for magic, what in _NOT_UTF8:
        if data.startswith(magic):
            return what
    head = data[:64]
    even, odd = head[0::2].count(0), head[1::2].count(0)  # NULs at even / odd offsets
    if len(head) >= 8 and min(even, odd) <= 1 and 4 * max(even, odd) >= 3 * (len(head) // 2):
        return f"UTF-16 text without a byte-order mark ({'big' if even > odd else 'little'}-endian: every other " \
               "byte is NUL)" + RESAVE
    return None


def _decode(path: Path, data: bytes) -> str:
    """Strict UTF-8 decode (BOM stripped); errors name the line and the byte offset, or the encoding / archive
    format the file is in instead."""
    what = _encoding_problem(data)
    if what is not None:
        raise DataError(f"{path}: line 1: not UTF-8 text: {what}")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: line {line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at byte offset "
                        f"{e.start}: {e.reason}){RESAVE}") from None
    if not text.strip():
        raise DataError(f"{path}: empty file ({len(data)} bytes, no records)")
    return text


class _Duplicated(dict):
    """A JSON object that named a key twice (`key`: the first one repeated); json.loads keeps the last value."""

    key: str


def _pairs(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    out = _Duplicated(obj)
    out.key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
    return out


def _duplicate_key(value: Any) -> str | None:
    """The first repeated key of any object inside `value` (walked without recursion), else None."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, _Duplicated):
            return v.key
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return None


def _refuse_duplicates(path: Path, value: Any, where: str) -> Any:
    key = _duplicate_key(value)
    if key is not None:
        raise DataError(f"{path}: {where}: duplicate key {key!r} in one JSON object (rule: each key once; a reader "
                        "would silently keep the last value)")
    return value


def _loads(path: Path, text: str, line: int | None) -> Any:
    """json.loads whose every failure is a DataError naming the line (JSON nested too deep and integers beyond
    Python's digit limit raise RecursionError / ValueError, not JSONDecodeError). Objects that repeat a key come
    back as `_Duplicated` (see `_refuse_duplicates`)."""
    where = f"line {line}: " if line is not None else ""
    try:
        return json.loads(text, object_pairs_hook=_pairs)
    except json.JSONDecodeError as e:
        where = f"line {(line or 1) + e.lineno - 1}: "
        raise DataError(f"{path}: {where}not valid JSON ({e.msg}, column {e.colno})") from None
    except RecursionError:
        raise DataError(f"{path}: {where}JSON nested too deeply to read") from None
    except ValueError as e:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise DataError(f"{path}: {where}unreadable JSON value ({str(e)[:200]})") from None


def _json_records(path: Path, text: str) -> tuple[list[dict], list[int]]:
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        items = _loads(path, text, None)
        if not isinstance(items, list):
            raise DataError(f"{path}: a .json file must hold one array of objects or JSON lines")
        for i, item in enumerate(items, 1):
            if not isinstance(item, dict):
                raise DataError(f"{path}: element {i}: expected a JSON object, got {type(item).__name__}")
            _refuse_duplicates(path, item, f"element {i}")
        if not items:
            raise DataError(f"{path}: empty file (the JSON array has no records)")
        return items, list(range(1, len(items) + 1))
    records, lines = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        rec = _loads(path, line, n)
        if not isinstance(rec, dict):
            raise DataError(f"{path}: line {n}: expected a JSON object, got {type(rec).__name__}")
        _refuse_duplicates(path, rec, f"line {n}")
        records.append(rec)
        lines.append(n)
    return records, lines


def _csv_records(path: Path, text: str) -> tuple[list[dict], list[int]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    records: list[dict] = []
    lines: list[int] = []
    header: list[str] | None = None
    end = 0  # last physical line consumed
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if header is None:
                header = [c.strip() for c in row]
                dup = sorted({c for c in header if header.count(c) > 1})
                if dup or "" in header:
                    raise DataError(f"{path}: line {start}: header has duplicate or empty column names {dup or ['']}")
                continue
            if len(row) != len(header):
                raise DataError(f"{path}: line {start}: {len(row)} fields, but the header has {len(header)} "
                                f"({', '.join(header)})")
            records.append({k: (v if v != "" else None) for k, v in zip(header, row)})
            lines.append(start)
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({e})") from None
    if not records:
        raise DataError(f"{path}: empty file (a header but no data rows)")
    return records, lines


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a regular file; DataError for anything else (a directory, FIFO or device named like a data
    file is refused before it is opened: opening a FIFO would block until someone writes to it)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file ({_kind(st.st_mode)})")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror})") from None


def _kind(mode: int) -> str:
    return ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
            "a symbolic link" if stat.S_ISLNK(mode) else "not a file")


def read_records(path: str | Path, data: bytes | None = None) -> tuple[pd.DataFrame, list[int]]:
    """Read a JSONL/JSON/CSV file into a raw table (the file's own columns, object dtype).

    Returns the table and the 1-based line (or JSON-array element) number of each record. `data`: the file's
    bytes when the caller has read them already (so that what is parsed is exactly what it hashed).
    Raises DataError for a missing, unreadable, non-regular, empty, non-UTF-8 or malformed file.
    """
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    if data is None:
        data = read_bytes(path)
    text = _decode(path, data)
    try:
        records, lines = (_csv_records if path.suffix.lower() == ".csv" else _json_records)(path, text)
    except RecursionError:
        raise DataError(f"{path}: nested too deeply to read") from None
    columns: dict[str, None] = {}
    for rec in records:
        columns.update(dict.fromkeys(rec))
    df = pd.DataFrame({c: pd.Series([rec.get(c) for rec in records], dtype=object) for c in columns})
    return df, lines


def as_text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and v != v):
        return None
    return v if isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def load_prompts(path: str | Path, prompt_column: str = "prompt", type_column: str = "type") -> pd.DataFrame:
    """Load an evaluation prompt file (JSONL/JSON/CSV), e.g. XSTest's ``prompt,type`` CSV.

    Returns columns id, prompt, type, unsafe. XSTest convention: a type containing "contrast" is an
    unsafe prompt, any other type a safe look-alike; without a type column, type is "" and unsafe is NA.
    """
    raw, lines = read_records(path)
    if prompt_column not in raw.columns:
        raise DataError(f"{path}: missing required column {prompt_column!r}; present columns: {list(raw.columns)}")
    for n, v in zip(lines, raw[prompt_column]):
        if not isinstance(v, str) or not v.strip():
            raise DataError(f"{path}: line {n}: column {prompt_column!r} must be a non-empty string, got {v!r}")
    ids = [as_text(v) for v in raw["id"]] if "id" in raw.columns else [None] * len(raw)
    types = [as_text(v) or "" for v in raw[type_column]] if type_column in raw.columns else [""] * len(raw)
    unsafe = [("contrast" in t.lower()) if type_column in raw.columns else pd.NA for t in types]
    return pd.DataFrame({
        "id": pd.Series([i if i is not None else f"row-{n}" for i, n in zip(ids, lines)], dtype=object),
        "prompt": pd.Series(list(raw[prompt_column]), dtype=object),
        "type": pd.Series(types, dtype=object),
        "unsafe": pd.array(unsafe, dtype="boolean"),
    })
