"""The one exception every dataset adapter raises for malformed input."""

from __future__ import annotations

import os


class DatasetFormatError(ValueError):
    """A dataset file or folder does not have the layout its adapter reads.

    The message names the file (or folder), the dataset / key / column / topic when there is one, and what was
    expected versus what was found.
    """

    def __init__(self, path: str | os.PathLike, problem: str, item: str | None = None) -> None:
        self.path, self.item, self.problem = str(path), item, problem
        super().__init__(f"{self.path}: {item}: {problem}" if item else f"{self.path}: {problem}")
