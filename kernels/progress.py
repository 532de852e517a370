"""The run's resume log: one JSON line per finished video, appended and flushed as it finishes.

The first line is the run's signature (weights and detection settings). A restarted run with the
same signature skips the videos already in the log; a different signature starts a new log. A
line cut short by a kill is ignored.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from plumbing.fileio import atomic_write

log = logging.getLogger(__name__)


class ProgressLog:
    def __init__(self, path: str | os.PathLike, signature: dict, fresh: bool = False):
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        if self.path.exists() and not fresh:
            self.records = self._read(signature)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rewrite(signature)  # drops a cut-off last line before anything is appended

    def _read(self, signature: dict) -> dict[str, dict]:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            header = None
        if not header or header.get("signature") != signature:
            log.warning("%s was written with other weights or settings: starting afresh", self.path)
            return {}
        records = {}
        for line in lines[1:]:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a killed run
            records[record["filename"]] = record
        return records

    def _rewrite(self, signature: dict) -> None:
        lines = [json.dumps({"signature": signature})] + [json.dumps(r) for r in self.records.values()]
        with atomic_write(self.path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")

    def append(self, record: dict) -> None:
        """Add one finished video, durably."""
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[record["filename"]] = record
