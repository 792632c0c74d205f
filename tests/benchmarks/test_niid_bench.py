"""A short seeded slice of ``benchmarks.niid_bench`` (the full table is hours): its cells run through the
service, are saved one file each, are not run again, and make the table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.niid_bench import Cell, main, matrix, noisy_test, ordering, table_rows
from service.data.datasets import BUILTIN
from service.federated.federation import Federation
from service.fleet.fleet import Fleet


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


def test_the_noise_cell_is_scored_on_each_devices_noisy_copy(tmp_path: Path) -> None:
    """As NIID-Bench scores feature noise: the test set once per device, copy i with sigma 0.1 i / 9."""
    fleet = Fleet(tmp_path / "data")
    federation = Federation(fleet)
    try:
        name = noisy_test(federation, argparse.Namespace(seed=0, devices=10))
        clean, _ = federation.split_samples(BUILTIN, "test", None)
        noisy, label = federation.split_samples(name, "test", None)
        count = len(clean["x"])
        assert len(noisy["x"]) == 10 * count
        np.testing.assert_array_equal(noisy[label][:count], clean[label])
        np.testing.assert_array_equal(noisy["x"][:count], clean["x"])  # device 0 is clean
        for i in (1, 9):
            spread = float(np.std(noisy["x"][i * count : (i + 1) * count] - clean["x"]))
            assert spread == pytest.approx(0.1 * i / 9, rel=0.02)
        assert noisy_test(federation, argparse.Namespace(seed=0, devices=10)) == name  # added once
    finally:
        federation.close()
        fleet.close()


def test_the_order_is_by_best_round_as_flowers_and_the_matrix_has_a_row_a_partition() -> None:
    """Flower reports each algorithm's best round, so ours are ordered by theirs too, not the last."""

    def cell(algorithm: str, partition: str, accuracy: list[float]) -> Cell:
        return Cell(algorithm, partition, len(accuracy), 10, accuracy, 60.0)

    cells = {
        ("fedavg", "dir0.5"): cell("fedavg", "dir0.5", [0.80, 0.88, 0.87]),  # best 88, last 87
        ("scaffold", "dir0.5"): cell("scaffold", "dir0.5", [0.80, 0.86, 0.875]),  # best 87.5, last 87.5
        ("fedavg", "iid"): cell("fedavg", "iid", [0.85, 0.89]),
        ("centralized", "all"): cell("centralized", "all", [0.90, 0.91]),
    }
    ours, flowers = ordering(cells, "dir0.5")
    assert ours == ["fedavg", "scaffold"]
    assert flowers == ["scaffold", "fedavg"]  # Flower: SCAFFOLD 88.44 > FedAvg 88.09
    rows, _ = table_rows(cells)
    assert [(row[0], row[1]) for row in rows] == [
        ("FedAvg", "IID"),
        ("FedAvg", "Dir(0.5)"),
        ("SCAFFOLD", "Dir(0.5)"),
    ]
    lines = matrix(cells).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| IID", "| Dir(0.5)", "| centralized"]
    dirichlet = lines[3].split(" | ")
    assert dirichlet[1:5] == ["87.0 (88.0) · 88.1", "… · 88.2", "87.5 (87.5) · 88.4", "… · 88.2"]
    assert dirichlet[5] == "FedAvg > SCAFFOLD; SCAFFOLD > FedAvg |"
    assert lines[4].startswith("| centralized | 91.0 (91.0)")
