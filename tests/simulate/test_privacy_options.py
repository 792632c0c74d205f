"""``fleet simulate --privacy`` and ``--secure-aggregation``: typed, checked before a run starts (the flag
and the key named), resolved in full, and carried through spec.json. No service is needed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from service.cli import main
from service.privacy.secagg import SecAggSettings
from service.privacy.settings import DPSettings
from service.simulate.comparison_config import ComparisonConfig
from service.simulate.partition_choice import Partition
from service.simulate.privacy_choice import PrivacyChoice
from service.simulate.run_spec import read_spec, spec_document, write_spec
from service.simulate.strategy_choice import SelectionChoice

UNREACHABLE = "http://127.0.0.1:9"


def refused(flags: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """What ``fleet simulate --dataset ... FLAGS`` says when it refuses them (exit 2, before any call)."""
    argv = ["simulate", "--dataset", "fashion-mnist", "--devices", "5", "--url", UNREACHABLE]
    assert main([*argv, "--output", str(tmp_path), *flags]) == 2
    return capsys.readouterr().err


def test_mode_central_alone_turns_privacy_on_with_every_default_filled_in() -> None:
    choice = PrivacyChoice.of({"mode": "central"}, None)
    assert choice.privacy == {
        "mode": "central",
        "noise_multiplier": 1.0,
        "clip": 1.0,
        "adaptive": False,
        "target_quantile": 0.5,
        "clip_learning_rate": 0.2,
        "clipped_count_stddev": None,
        "delta": 1e-5,
        "accountant": "rdp",
        "target_epsilon": None,
        "on_budget": "refuse",
    }
    assert choice.secure_aggregation is None and choice.on
    assert choice.rounds_body() == {"privacy": choice.privacy}
    assert not PrivacyChoice().on and PrivacyChoice().rounds_body() == {}


def test_values_are_typed_as_the_settings_fields_say() -> None:
    given = {"mode": "local", "noise_multiplier": "0.7", "adaptive": "false", "accountant": "pld"}
    choice = PrivacyChoice.of(given | {"target_epsilon": "8", "on_budget": "stop"}, {"threshold": "3"})
    assert choice.privacy is not None and choice.secure_aggregation is not None
    assert choice.privacy["noise_multiplier"] == 0.7 and choice.privacy["adaptive"] is False
    assert choice.privacy["target_epsilon"] == 8.0 and choice.privacy["on_budget"] == "stop"
    assert choice.secure_aggregation == {
        "threshold": 3,
        "neighbors": None,
        "clipping_range": 8.0,
        "quantization_range": 1 << 22,
        "min_inputs": None,
    }
    assert isinstance(choice.secure_aggregation["threshold"], int)
    assert PrivacyChoice.of({"adaptive": "true"}, None).privacy["adaptive"] is True  # type: ignore[index]
    # what the rounds API's settings are built from
    DPSettings(**choice.privacy).check()
    SecAggSettings(**choice.secure_aggregation).check(5)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ("--privacy", "mode=bogus"),
            "--privacy mode must be one of central, local, distributed, got 'bogus'",
        ),
        (("--privacy", "clip=0"), "--privacy clip must be a number in (0, 1e+06]"),
        (("--privacy", "noise_multiplier=-1"), "--privacy noise_multiplier must be a number in [0, 10000]"),
        (("--privacy", "delta=1"), "--privacy delta must be a number in (0, 1)"),
        (("--privacy", "clip=abc"), "--privacy clip must be a number, got 'abc'"),
        (("--privacy", "clip=inf"), "--privacy clip must be finite"),
        (("--privacy", "adaptive=maybe"), "--privacy adaptive must be true or false, got 'maybe'"),
        (("--privacy", "accountant=moments"), "--privacy accountant must be one of rdp, pld"),
        (("--privacy", "on_budget=ignore"), "--privacy on_budget must be one of refuse, stop"),
        (("--privacy", "noise=1"), "unknown --privacy key 'noise'"),
        (("--privacy", "clip"), "--privacy takes KEY=VALUE, got 'clip'"),
        (("--secure-aggregation", "neighbors=3"), "--secure-aggregation needs threshold=N"),
        (("--secure-aggregation", "threshold=2.5"), "--secure-aggregation threshold must be a whole number"),
        (("--secure-aggregation", "threshold=2", "colour=red"), "unknown --secure-aggregation key 'colour'"),
    ],
)
def test_bad_values_are_refused_naming_the_flag_and_the_key(
    flags: tuple[str, ...], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in refused(("--selection", "uniform", *flags), tmp_path, capsys)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--privacy", "mode=central"), "--privacy: with differential privacy, participants are sampled"),
        (("--strategy", "krum", "--selection", "uniform", "--privacy", "mode=central"), "'krum' cannot run"),
        (
            ("--selection", "uniform", "--participants", "3", "--secure-aggregation", "threshold=4"),
            "--secure-aggregation threshold must be at most the cohort (3 participants), got 4",
        ),
        (("--selection", "uniform", "--privacy", "mode=distributed"), "--privacy mode 'distributed'"),
        (
            ("--selection", "uniform", "--rounds", "5", "--privacy", "target_epsilon=0.1"),
            "--privacy target_epsilon 0.1 would be exceeded: 5 rounds",
        ),
        (("--selection", "uniform", "--privacy", "accountant=pld"), "--privacy accountant 'pld' cannot"),
    ],
)
def test_settings_the_rounds_would_refuse_are_refused_before_the_run(
    flags: tuple[str, ...], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rounds' own checks run here: the service is unreachable, so reaching it would fail otherwise."""
    assert message in refused(flags, tmp_path, capsys)


def test_privacy_needs_the_federated_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--url", UNREACHABLE, "--output", str(tmp_path), "--privacy", "mode=central"]
    assert main(argv) == 2
    assert "--privacy need --dataset" in capsys.readouterr().err


def test_the_spec_carries_privacy_resolved_and_reads_it_back(tmp_path: Path) -> None:
    config = ComparisonConfig(
        partition=Partition.of("interest", 5, 0),
        participants=4,
        selection=SelectionChoice.of("poisson", {}),
        privacy=PrivacyChoice.of(
            {
                "mode": "distributed",
                "noise_multiplier": "0.8",
                "adaptive": "yes",
                "clipped_count_stddev": "1",
            },
            {"threshold": "3", "neighbors": "3"},
        ),
    )
    document = spec_document(config, model="m", dataset_content_id="c")
    saved = json.loads(write_spec(document, tmp_path).read_text())["privacy"]
    assert saved["privacy"] == dict(config.privacy.privacy or {}) and saved["privacy"]["delta"] == 1e-5
    assert saved["secure_aggregation"]["quantization_range"] == 1 << 22
    again = read_spec(tmp_path)
    assert isinstance(again, ComparisonConfig)
    assert again.privacy == config.privacy
    assert again.privacy.rounds_body() == config.privacy.rounds_body()
    assert (
        "DP distributed (noise_multiplier=0.8, clip=1, delta=1e-05, adaptive=True, clipped_count_stddev=1"
        in again.describe()
    )
    assert "SecAgg+ (threshold=3, neighbors=3)" in again.describe()


def test_a_spec_without_privacy_runs_without_it(tmp_path: Path) -> None:
    """Specs saved before privacy existed (no ``privacy`` key) and runs without it read back as off."""
    config = ComparisonConfig(partition=Partition.of("interest", 4, 0))
    document = spec_document(config, model="m", dataset_content_id="c")
    assert document["privacy"] is None
    write_spec({k: v for k, v in document.items() if k != "privacy"}, tmp_path)
    again = read_spec(tmp_path)
    assert isinstance(again, ComparisonConfig) and again.privacy == PrivacyChoice()
    assert (
        replace(again, model=None, dataset_content_id=None, participants=None, fine_tune_epochs=None)
        == config
    )
