"""The durable local journal of order intents and outcomes. Adapter ring.

Append-only JSON lines, fsynced per entry BEFORE the action it records is attempted: after
a crash, every order the loop may have sent is in the journal (an `intent` without an
`outcome` is looked up by its clOrdID on restart). Entries:
`{"ts": ns, "kind": "intent"|"outcome"|"event", "session": id, ...}`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.jsontypes import JsonObject
from live.jsonl import JsonLinesAppender


class Journal:
    """Append + fsync JSON lines (see module docstring)."""

    def __init__(self, path: str | Path, session: str) -> None:
        self.path = Path(path)
        self.session = session
        self._out = JsonLinesAppender(self.path, fsync_each=True)

    def record(self, ts_ns: int, kind: str, **fields: Any) -> None:
        self._out.append({"ts": int(ts_ns), "kind": kind, "session": self.session, **fields})

    def close(self) -> None:
        self._out.close()


def read_journal(path: str | Path) -> list[JsonObject]:
    """Every entry; a torn last line (crash mid-write) is ignored, any other bad line raises."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    out: list[JsonObject] = []
    for i, line in enumerate(lines):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: corrupt journal line") from None
        if not isinstance(entry, dict):
            raise ValueError(f"{path}:{i + 1}: a journal line is a JSON object")
        out.append(entry)
    return out


def unresolved_intents(entries: list[JsonObject]) -> list[JsonObject]:
    """Intents with no outcome for the same clOrdID (to be looked up on restart). Pure."""
    done = {e.get("cl_ord_id") for e in entries if e.get("kind") == "outcome"}
    return [e for e in entries if e.get("kind") == "intent" and e.get("cl_ord_id") not in done]
