"""Tables printed to a pipe or a CI log keep their figures whole."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table

from service.console import PIPE_WIDTH, make_console


def wide_table() -> Table:
    """As wide as ``fleet simulate``'s: nine columns of figures."""
    table = Table(title="figures")
    for name in ("device", "interest", *(f"column {i}" for i in range(7))):
        table.add_column(name, justify="right")
    table.add_row("device-0001", "3 classes", *("86.123%" for _ in range(7)))
    return table


def test_a_table_written_to_a_pipe_keeps_its_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    plain, ours = io.StringIO(), io.StringIO()
    Console(file=plain).print(wide_table())
    assert "…" in plain.getvalue(), "rich alone cuts the figures at 80 columns (what this guards against)"
    console = make_console(file=ours)
    assert console.width == PIPE_WIDTH
    console.print(wide_table())
    assert "…" not in ours.getvalue() and ours.getvalue().count("86.123%") == 7


def test_columns_in_the_environment_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    assert make_console(file=io.StringIO()).width == 100
