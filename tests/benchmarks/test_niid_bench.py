"""A short seeded slice of ``benchmarks.niid_bench`` (the full table is hours): its cells run through the
service, are saved one file each, are not run again, and make the table."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.niid_bench import main


def test_a_slice_of_the_table_runs_saves_and_resumes(tmp_path: Path, capsys: object) -> None:
    results = tmp_path / "results" / "slice"
    argv = [
        "--rounds",
        "1",
        "--local-epochs",
        "1",
        "--algorithms",
        "fedavg",
        "scaffold",
        "--partitions",
        "c2",
        "--no-centralized",
        "--results",
        str(results),
    ]
    main(argv)
    saved = {p.name: json.loads(p.read_text()) for p in results.glob("*.json")}
    assert sorted(saved) == ["fedavg-c2.json", "scaffold-c2.json"]
    for name, cell in saved.items():
        assert len(cell["accuracy"]) == 1 and 0.0 < cell["accuracy"][0] <= 1.0, name
        assert cell["spec"]["aggregation"] == name.split("-")[0]
        train = cell["partition_stats"]["train"]
        assert train["distinct_examples"] == train["examples"] == 60_000  # disjoint and complete
        assert train["labels_max"] == 2  # #C=2
    before = {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}
    assert main([*argv, "--algorithms", "fedavg"]) in (0, 1)  # saved: not run again
    assert {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")} == before
    shown = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "saved, not run again" in shown and "SCAFFOLD" in shown and "#C=2" in shown
