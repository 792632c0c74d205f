"""A short seeded slice of ``benchmarks.niid_bench`` (the full table is hours): its cells run through the
service, are saved one file each, are not run again, and make the table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.niid_bench import main, noisy_test
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
