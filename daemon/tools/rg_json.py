"""Reading `rg --json` output into grep's answer, decoding only the events the answer keeps.

A broad search prints far more matches than a task keeps (max_results): in a
large tree, json-decoding every line cost the worker more than rg's search.
So lines are told apart by their first bytes: rg writes each event's "type"
first, and a newline inside a JSON string is escaped, so every event starts a
line. Matches are decoded until `limit` are kept (with their context); the
rest are counted by rg's closing summary, or with bytes.count when a glob
check refuses some files (or the summary is missing). If a match or end line ever does not
start as expected (another rg's key order), every line is decoded instead.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from pydantic_core import from_json

_MATCH = b'{"type":"match"'
_CONTEXT = b'{"type":"context"'
_BEGIN = b'{"type":"begin"'
_END = b'{"type":"end"'


def parse_rg_json(stdout: bytes, limit: int, wanted: Callable[[str], bool] | None = None,
                  context: int = 0) -> dict[str, Any]:
    """Turn `rg --json` lines into matches, with context lines attached to their match.

    Up to `context` lines right after a match are its `after`; any other
    context line is the `before` of the next match. Matches in files whose
    path `wanted` refuses are neither kept nor counted. `count` is every
    match (`truncated` when it is past `limit`); `files_with_matches` the
    files with at least one counted match.
    """
    answer = _Answer(limit, wanted, context)
    pos = answer.keep(stdout)
    if pos < len(stdout):
        answer.count_rest(stdout, pos)
    return {"matches": answer.matches, "count": answer.total, "truncated": answer.total > limit,
            "files_with_matches": answer.files}


def _decode(line: bytes) -> Any:
    """One JSON line, or None. pydantic's parser (a dependency already) takes half the time of
    json.loads; json.loads still reads what it refuses (a lone surrogate escape)."""
    try:
        return from_json(line)
    except ValueError:
        pass
    try:
        return json.loads(line)
    except ValueError:
        return None


def _text(field: dict[str, Any]) -> str:
    if "text" in field:
        return field["text"]
    return base64.b64decode(field.get("bytes", "")).decode("utf-8", "replace")


class _Answer:
    """The matches kept so far and the counts, as rg's events arrive."""

    def __init__(self, limit: int, wanted: Callable[[str], bool] | None, context: int) -> None:
        self.limit, self.wanted, self.context = limit, wanted, context
        self.matches: list[dict[str, Any]] = []
        self.before: list[str] = []
        self.last_line = -1      # line number of the last line attached to matches[-1]
        self.total = 0
        self.files = 0
        self.file_ok = True      # the current file's path is wanted
        self.file_hit = False    # and it has a counted match
        self.prefixed = True     # every match and end line so far started as _MATCH / _END

    def keep(self, stdout: bytes) -> int:
        """Decode events until `limit` matches are kept and their after-context is complete;
        the offset of the first line not read (len(stdout) when all were)."""
        pos, size = 0, len(stdout)
        while pos < size:
            end = stdout.find(b"\n", pos)
            if end < 0:
                end = size
            if len(self.matches) >= self.limit and self.prefixed and not self._may_attach(stdout, pos):
                return pos
            self._event(stdout[pos:end])
            pos = end + 1
        return size

    def _may_attach(self, stdout: bytes, pos: int) -> bool:
        # Once full, only context lines right after the last kept match still change the answer.
        return bool(self.context) and stdout.startswith(_CONTEXT, pos) and len(self.matches[-1]["after"]) < self.context

    def _event(self, line: bytes) -> None:
        if line.startswith(_END):
            self._end_file()
            return
        if line.startswith(_BEGIN) and self.wanted is None:
            self._begin_file(True)
            return
        event = _decode(line)
        if event is None:
            return  # a truncation marker or a partial line
        kind, data = event.get("type"), event.get("data", {})
        if kind == "begin":
            self.prefixed = self.prefixed and line.startswith(_BEGIN)
            self._begin_file(self.wanted is None or self.wanted(_text(data["path"])))
        elif kind == "end":
            self.prefixed = False
            self._end_file()
        elif kind == "context":
            self._context(data)
        elif kind == "match":
            self.prefixed = self.prefixed and line.startswith(_MATCH)
            self._match(data)

    def _begin_file(self, ok: bool) -> None:
        self.before, self.file_ok, self.file_hit = [], ok, False

    def _end_file(self) -> None:
        self.files += self.file_hit
        self.file_hit = False

    def _context(self, data: dict[str, Any]) -> None:
        text = _text(data["lines"]).rstrip("\n")
        last = self.matches[-1] if self.matches else None
        if (last and not self.before and len(last["after"]) < self.context and last["path"] == _text(data["path"])
                and data["line_number"] == self.last_line + 1):
            last["after"].append(text)
            self.last_line += 1
        else:
            self.before.append(text)

    def _match(self, data: dict[str, Any]) -> None:
        path = _text(data["path"])
        if self.wanted is not None and not self.wanted(path):
            self.before = []
            return
        self.total += 1
        self.file_hit = True
        if len(self.matches) < self.limit:
            self.matches.append({"path": path, "line_number": data["line_number"],
                                 "text": _text(data["lines"]).rstrip("\n"), "before": self.before, "after": []})
            self.last_line = data["line_number"]
        self.before = []

    def count_rest(self, stdout: bytes, pos: int) -> None:
        """Count the matches and files from the line at `pos` (pos > 0) on, decoding only begin lines
        and only to ask `wanted` about their file."""
        match, end_mark, begin_mark = b"\n" + _MATCH, b"\n" + _END, b"\n" + _BEGIN
        at = pos - 1   # the newline before the next line
        stats = _summary(stdout) if self.wanted is None else None
        if stats is not None:
            # rg's own totals: no scan at all, and right even when the middle of its output was dropped (cap)
            self.total, self.files = stats
            return
        if self.wanted is None:
            self.total += stdout.count(match, at)
            self.files += stdout.count(end_mark, at)
            return
        while True:
            end = stdout.find(end_mark, at)
            if self.file_ok:
                hits = stdout.count(match, at, len(stdout) if end < 0 else end)
                self.total += hits
                self.file_hit = self.file_hit or hits > 0
            if end < 0:
                return
            self._end_file()
            begin = stdout.find(begin_mark, end + 1)
            if begin < 0:
                return
            at = stdout.find(b"\n", begin + 1)
            try:
                path = _text(_decode(stdout[begin + 1:len(stdout) if at < 0 else at])["data"]["path"])
            except (KeyError, TypeError):
                path = None
            self._begin_file(path is not None and self.wanted(path))
            if at < 0:
                return


def _summary(stdout: bytes) -> tuple[int, int] | None:
    """(matched lines, files with a match) from rg's closing summary event, if it is there."""
    start = stdout.rfind(b"\n", 0, len(stdout.rstrip(b"\n"))) + 1
    try:
        event = json.loads(stdout[start:])
        stats = event["data"]["stats"] if event.get("type") == "summary" else None
        return (stats["matched_lines"], stats["searches_with_match"]) if stats else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
