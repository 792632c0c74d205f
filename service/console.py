"""The console that commands and benchmarks print to.

On a terminal it is rich's own (the terminal's width). Written to a file, a pipe or a CI log, rich
would assume 80 columns and cut a wide table's figures to ``86.…``; there the console is wide
enough for every table instead. ``COLUMNS`` in the environment wins over both.
"""

from __future__ import annotations

import os
from typing import IO

from rich.console import Console

PIPE_WIDTH = 200
"""Columns assumed when the output is not a terminal."""


def make_console(*, stderr: bool = False, file: IO[str] | None = None) -> Console:
    console = Console(stderr=stderr, file=file)
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(stderr=stderr, file=file, width=PIPE_WIDTH)
