"""Appending a round to params.yaml: `append_round(params_path, name, batch, parent)`.

Written by the YAML emitter, never by string formatting. The writers are tried in turn until one gives a text that
re-parses to exactly the old params plus this round:
  1. the entry inserted as one emitted line at the end of the block-style `rounds:` mapping (every other byte,
     comments included, kept);
  2. a ruamel.yaml round trip (keeps comments) for layouts the line insert does not handle (`rounds: {}` ...);
  3. a plain dump of the new params (comments lost, said in a first-line comment).
The result is validated like any params file (a broken params.yaml is never written) and replaces the old one
atomically.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import yaml

from ...config import load_yaml_text, parse_params
from ...errors import ConfigError, SafePatchingError
from ...io.atomic import write_atomic


def _entry_lines(name: str, batch: str, parent: str, indent: str) -> str:
    """`name: {batch: ..., parent: ...}` emitted by the YAML emitter (quoted as needed), one flow mapping."""
    text = yaml.safe_dump({name: {"batch": batch, "parent": parent}}, default_flow_style=None, sort_keys=False,
                          width=1 << 30, allow_unicode=False)
    return "".join(indent + line for line in text.splitlines(True))


def _line_insert(text: str, name: str, batch: str, parent: str, want: dict) -> str | None:
    """Insert the entry at the end of the block-style `rounds:` mapping, keeping every other byte (comments)."""
    lines = text.splitlines(keepends=True)
    head = next((i for i, line in enumerate(lines) if re.match(r"rounds:[ \t]*(#.*)?$", line.rstrip("\r\n"))), None)
    if head is None:
        if re.search(r"^rounds[ \t]*:", text, re.M):
            return None  # e.g. `rounds: {}`: leave it to the round-trip writer
        sep = "" if not text or text.endswith("\n") else "\n"
        return text + sep + "rounds:\n" + _entry_lines(name, batch, parent, "  ")
    last, indent = head, None
    for i in range(head + 1, len(lines)):
        line = lines[i]
        if line.strip() and line[0] not in " \t#":
            break  # the next top-level key
        if line.strip() and not line.lstrip().startswith("#") and line[0] in " \t":
            last = i
            if indent is None:
                indent = line[: len(line) - len(line.lstrip())]
    before = lines[: last + 1]
    if before and not before[-1].endswith("\n"):
        before[-1] += "\n"
    return "".join(before) + _entry_lines(name, batch, parent, indent or "  ") + "".join(lines[last + 1:])


def _round_trip(text: str, name: str, batch: str, parent: str, want: dict) -> str | None:
    """ruamel.yaml round trip (keeps comments) for layouts the line insert does not handle."""
    try:
        from ruamel.yaml import YAML
        from ruamel.yaml.comments import CommentedMap
    except ImportError:  # pragma: no cover -- ruamel comes with DVC
        return None
    y = YAML()
    y.width = 1 << 16
    doc = y.load(text)
    if doc is None:
        doc = CommentedMap()
    if doc.get("rounds") is None:
        doc["rounds"] = CommentedMap()
    entry = CommentedMap([("batch", batch), ("parent", parent)])
    entry.fa.set_flow_style()
    doc["rounds"][name] = entry
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()


def _dump(text: str, name: str, batch: str, parent: str, want: dict) -> str:
    return ("# written by safepatching.ops.intake: the comments of this file could not be kept\n"
            + yaml.safe_dump(want, sort_keys=False, allow_unicode=False, width=1 << 30))


def append_round(params_path: Path, name: str, batch: str, parent: str) -> None:
    """Append the round `name: {batch, parent}` to params.yaml's `rounds:` (see the module docstring)."""
    params_path = Path(params_path)
    text = params_path.read_text(encoding="utf-8")
    data = load_yaml_text(text, str(params_path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{params_path}: top level must be a mapping")
    rounds = data.get("rounds") or {}
    if not isinstance(rounds, dict):
        raise ConfigError(f"{params_path}: rounds must be a mapping")
    if name in rounds:
        raise ConfigError(f"{params_path}: round {name!r} already exists")
    want = {**data, "rounds": {**rounds, name: {"batch": batch, "parent": parent}}}
    parse_params(want, str(params_path))  # a broken params.yaml is never written
    for render in (_line_insert, _round_trip, _dump):
        new = render(text, name, batch, parent, want)
        if new is None:
            continue
        try:
            if load_yaml_text(new) == want:
                break
        except SafePatchingError:
            continue
    else:  # pragma: no cover -- _dump always round-trips
        raise ConfigError(f"{params_path}: could not write round {name!r}")
    write_atomic(params_path, new)
