"""Errors of the bag library: each names the bag and what is wrong with it."""

from __future__ import annotations

from pathlib import Path


class BagError(RuntimeError):
    """A bag cannot be written or read; the message names the bag folder and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"bag {self.path}: {problem}")


class BagExistsError(BagError, FileExistsError):
    """The output folder of a new recording exists already (recordings are never overwritten)."""
