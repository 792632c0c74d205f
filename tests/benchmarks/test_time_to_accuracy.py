"""A tiny seeded slice of ``benchmarks.time_to_accuracy``: both runs go through the service on profiled
phones, the table names both, and the plot is a PNG."""

from __future__ import annotations

from pathlib import Path

from benchmarks.time_to_accuracy import main


def test_a_slice_runs_both_and_draws_the_plot(tmp_path: Path, tiny_model_path: Path, capsys: object) -> None:
    plot = tmp_path / "tta.png"
    argv = ["--devices", "6", "--rounds", "2", "--participants", "3", "--buffer-size", "3", "--train", "40"]
    argv += ["--eval-limit", "200", "--targets", "0.1", "--model", str(tiny_model_path), "--plot", str(plot)]
    argv += ["--wait-for-all"]
    assert main(argv) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "FedAvg, deadline" in shown and "FedBuff, K = 3" in shown and "FedAvg, no deadline" in shown
    assert shown.count("/ FedBuff") == 2  # a ratio row for each synchronous run
