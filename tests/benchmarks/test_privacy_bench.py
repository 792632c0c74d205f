"""A tiny seeded slice of ``benchmarks.privacy``: every configuration runs through the service on profiled
phones, is saved one file each and not run again, the tables have their shape, epsilon falls as the
noise grows (with and without secure aggregation), and both plots are PNGs."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.privacy import main
from benchmarks.privacy_results import (
    COLUMNS,
    COMPARISON,
    comparison_rows,
    load_results,
    table_rows,
)

NOISE = (0.5, 2.0)


def test_a_slice_runs_every_config_and_epsilon_falls_as_noise_grows(
    tmp_path: Path, tiny_model_path: Path, capsys: object
) -> None:
    results, plots = tmp_path / "results", tmp_path / "plots"
    argv = ["--devices", "30", "--participants", "6", "--rounds", "2", "--eval-limit", "200"]
    argv += ["--noise", *map(str, NOISE), "--model", str(tiny_model_path)]
    argv += ["--results", str(results), "--plots", str(plots)]
    assert main(argv) == 0

    saved = load_results(results)
    levels = (0.0, *NOISE)
    expected = {"plain", "secagg"} | {f"{kind}-z{z:g}" for kind in ("central", "distributed") for z in levels}
    assert set(saved) == expected
    for result in saved.values():
        assert len(result.accuracy) == 2 and all(0.0 < a <= 1.0 for a in result.accuracy), result.key
    for kind in ("central", "distributed"):
        spent = [saved[f"{kind}-z{z:g}"].final_epsilon for z in levels]
        assert spent[0] == math.inf  # clipping only: no privacy
        epsilons = [e for e in spent[1:] if e is not None and math.isfinite(e)]
        assert len(epsilons) == len(NOISE), spent
        assert epsilons[0] > epsilons[1], (kind, spent)  # more noise, less spent
    assert saved["plain"].final_epsilon is None and not saved["plain"].protocol_bytes
    assert all(b > 0 for b in saved["secagg"].protocol_bytes)
    assert saved["distributed-z2"].threshold == 4  # 2/3 of the cohort of 6

    rows = table_rows(saved)
    assert len(rows) == len(expected) and all(len(row) == len(COLUMNS) for row in rows)
    assert [row[0] for row in rows][:2] == ["FedAvg", "DP central"] and rows[0][8] == "1.00x"
    compared = comparison_rows(saved)
    assert len(compared) == 1 + len(levels) and all(len(row) == len(COMPARISON) for row in compared)
    for name in ("privacy_accuracy.png", "privacy_rounds.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    before = {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}
    assert main([*argv, "--table-only"]) == 0
    assert main(argv) == 0  # every config saved: none run again
    assert {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")} == before
    shown = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "saved, not run again" in shown and "DP + SecAgg" in shown
