"""The one error type of the data layer: it always names the file and what is wrong."""
from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
