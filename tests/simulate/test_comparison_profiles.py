"""``fleet simulate --dataset --profiles MIX --deadline``: the rounds on ideal and on profiled phones.

One run for the module against a real ``fleet serve``: 6 devices from a mix file of two classes whose
simulated round times are far apart (``slow`` takes about 30 s a round, ``fast`` under 1 s), with a
10 s deadline, so exactly the slow participants straggle.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli import main
from service.server_process import ServerProcess
from tests.simulate.test_comparison import Simulated

DEVICES, ROUNDS, TRAIN, TEST, DEADLINE = 6, 2, 60, 20, 10.0
MIX = """\
name: two-speeds
classes:
  - class: slow
    share: 0.5
    compute: {train_ms_per_sample: 500, infer_ms_per_sample: 100}
  - class: fast
    share: 0.5
    compute: {train_ms_per_sample: 1, infer_ms_per_sample: 0.2}
"""


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulated]:
    root = tmp_path_factory.mktemp("profiled-simulate")
    mix = root / "two-speeds.yaml"
    mix.write_text(MIX)
    output = root / "report"
    with ServerProcess(root / "data") as server:
        out = io.StringIO()
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
            patch.delenv("COLUMNS", raising=False)
            code = main(
                [
                    "simulate",
                    *("--url", server.url, "--dataset", "fashion-mnist", "--devices", str(DEVICES)),
                    *("--rounds", str(ROUNDS), "--train-per-device", str(TRAIN)),
                    *("--test-per-device", str(TEST), "--epochs", "1", "--global-test-size", "200"),
                    *("--profiles", str(mix), "--deadline", str(DEADLINE), "--prefix", "prof"),
                    *("--output", str(output)),
                ]
            )
        yield Simulated(code, out.getvalue(), output)


def classes(simulated: Simulated) -> dict[str, str]:
    return {d["device_id"]: d["profile_class"] for d in simulated.report()["devices"]}


def test_the_profiled_run_succeeds_and_every_device_has_a_class_of_the_mix(simulated: Simulated) -> None:
    assert simulated.code == 0, simulated.printed
    assert set(classes(simulated).values()) <= {"slow", "fast"}
    assert "straggled" in simulated.printed and "ideal" in simulated.printed


def test_exactly_the_slow_participants_straggle_and_the_round_lasts_the_deadline(
    simulated: Simulated,
) -> None:
    by_id = classes(simulated)
    for metrics in simulated.report()["rounds"]:
        slow = [d for d in metrics["participants"] if by_id[d] == "slow"]
        assert sorted(metrics["stragglers"]) == sorted(slow)
        assert metrics["straggled"] == len(slow)
        assert metrics["finished"] == len(metrics["participants"]) - len(slow)
        if slow:  # the server waited for them until the deadline
            assert metrics["simulated_seconds"] == pytest.approx(DEADLINE)
        else:
            assert 0 < metrics["simulated_seconds"] < DEADLINE
        assert metrics["ideal_global_accuracy"] is not None


def test_the_devices_table_and_csv_count_each_devices_late_rounds(simulated: Simulated) -> None:
    with (simulated.output / "report.csv").open() as f:
        rows = {r["device_id"]: r for r in csv.DictReader(f)}
    rounds = simulated.report()["rounds"]
    for device_id, profile_class in classes(simulated).items():
        late = sum(device_id in r["stragglers"] for r in rounds)
        assert int(rows[device_id]["rounds_straggled"]) == late
        if profile_class == "fast":
            assert late == 0


def test_the_duration_plot_is_written(simulated: Simulated) -> None:
    content = (simulated.output / "durations.png").read_bytes()
    assert content.startswith(b"\x89PNG") and 3_000 < len(content) < 150_000


def test_a_deadline_without_profiles_or_a_bad_mix_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ("--url", "http://127.0.0.1:9", "--output", str(tmp_path), "--dataset", "fashion-mnist")
    assert main(["simulate", *common, "--deadline", "5"]) == 2
    assert "a deadline needs --profiles" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes:\n  - class: x\n    share: 1\n    compute: {speed: -2}\n")
    assert main(["simulate", *common, "--profiles", str(bad)]) == 2
    assert "compute.speed must be at least 0.001" in capsys.readouterr().err
