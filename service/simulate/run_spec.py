"""A comparison's full spec, saved with its results (``spec.json``), and the run it describes read back.

The spec holds everything the run depends on: the model and the dataset (by name and content ID), the
partition and its parameters, the profile mix, the strategy with every setting resolved, its server
optimizer, the client selection, the privacy (differential privacy and secure aggregation, every setting
resolved), rounds, epochs, batch size, every seed and the service's version.
``fleet simulate --from-run`` runs it again from this file alone; with the same service and dataset the
new report's metrics equal the old ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from service.data.spec import PartitionKind, PartitionSpec
from service.simulate.comparison_config import ComparisonConfig, Seeds
from service.simulate.harness import SimulationConfig
from service.simulate.partition_choice import PARAMETERS, Partition
from service.simulate.privacy_choice import PrivacyChoice
from service.simulate.strategy_choice import SelectionChoice, StrategyChoice
from service.storage import write_atomic
from service.version import __version__

SPEC_FILE = "spec.json"
FORMAT = "tflite-fleet/simulate-spec/1"
"""The spec's format; a spec of another format is refused rather than half-read."""


def spec_document(config: ComparisonConfig, *, model: str, dataset_content_id: str | None) -> dict[str, Any]:
    """The spec of ``config`` as run with ``model`` on the dataset of ``dataset_content_id``."""
    return {
        "format": FORMAT,
        "service_version": __version__,
        "mode": "federated",
        "model": model,
        "dataset": {"name": config.dataset, "content_id": dataset_content_id},
        "partition": config.partition.as_dict(),
        "profiles": None
        if config.profiles is None
        else {"mix": config.profiles, "deadline": config.deadline, "stragglers": config.stragglers},
        "strategy": config.strategy.as_dict(),
        "selection": config.selection.as_dict(),
        "privacy": config.privacy.as_dict() if config.privacy.on else None,
        "rounds": config.rounds,
        "participants": config.per_round,
        "training": {
            "epochs": config.epochs,
            "fine_tune_epochs": config.tune_epochs,
            "batch_size": config.batch_size,
        },
        "global_test_size": config.global_test_size,
        "seeds": config.seeds.as_dict(),
        "devices": {"prefix": config.device_prefix, "count": config.partition.devices},
        "concurrency": config.concurrency,
        "timeout": config.timeout,
    }


def upload_document(config: SimulationConfig, *, dataset_source: str) -> dict[str, Any]:
    """The spec of an uploading run (each device's Fashion-MNIST share sent to it; the service's
    default model): its partition, training, evaluation and seed."""
    partition = config.partition
    parameters = {name: getattr(partition, name) for name in PARAMETERS[partition.kind]}
    return {
        "format": FORMAT,
        "service_version": __version__,
        "mode": "upload",
        "model": None,
        "dataset": {"name": "fashion-mnist", "source": dataset_source},
        "partition": {"kind": partition.kind, "devices": partition.devices, "seed": partition.seed}
        | parameters,
        "training": {"epochs": config.epochs, "batch_size": config.batch_size, "mode": config.mode},
        "global_test_size": config.global_test_size,
        "grid_device": config.grid_device,
        "seeds": {"jobs": partition.seed},
        "devices": {"prefix": config.device_prefix, "count": partition.devices},
        "concurrency": config.concurrency,
        "timeout": config.job_timeout,
    }


def write_spec(document: Mapping[str, Any], output: Path) -> Path:
    path = output / SPEC_FILE
    write_atomic(path, (json.dumps(document, indent=2) + "\n").encode())
    return path


def spec_path(path: Path) -> Path:
    """``path`` itself, or the ``spec.json`` in it when it is a directory (an earlier output)."""
    return path / SPEC_FILE if path.is_dir() else path


def read_spec(path: Path) -> ComparisonConfig | SimulationConfig:
    """The comparison a saved spec describes; ValueError naming what is missing or wrong."""
    file = spec_path(path)
    try:
        document = json.loads(file.read_text())
    except FileNotFoundError:
        raise ValueError(
            f"no run spec at {file} (an output directory of fleet simulate --dataset?)"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the run spec {file}: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise ValueError(f"{file} is not a fleet simulate spec of format {FORMAT} (format: {found!r})")
    try:
        return _upload_config(document) if document.get("mode") == "upload" else _config(document)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"the run spec {file} lacks or misstates {exc}") from None


def _config(document: Mapping[str, Any]) -> ComparisonConfig:
    profiles = document["profiles"]
    training = document["training"]
    return ComparisonConfig(
        dataset=str(document["dataset"]["name"]),
        dataset_content_id=document["dataset"].get("content_id"),
        model=document["model"],
        partition=Partition.from_dict(document["partition"]),
        rounds=int(document["rounds"]),
        participants=int(document["participants"]),
        strategy=StrategyChoice.from_dict(document["strategy"]),
        selection=SelectionChoice.from_dict(document["selection"]),
        privacy=PrivacyChoice.from_dict(document.get("privacy")),
        seeds=Seeds.from_dict(document["seeds"]),
        epochs=int(training["epochs"]),
        fine_tune_epochs=int(training["fine_tune_epochs"]),
        batch_size=int(training["batch_size"]),
        global_test_size=int(document["global_test_size"]),
        device_prefix=str(document["devices"]["prefix"]),
        concurrency=int(document["concurrency"]),
        timeout=float(document["timeout"]),
        profiles=None if profiles is None else profiles["mix"],
        deadline=None if profiles is None else profiles["deadline"],
        stragglers="drop" if profiles is None else profiles["stragglers"],
    )


def _upload_config(document: Mapping[str, Any]) -> SimulationConfig:
    saved = Partition.from_dict(document["partition"])
    training = document["training"]
    return SimulationConfig(
        partition=PartitionSpec(
            kind=cast(PartitionKind, saved.kind), devices=saved.devices, seed=saved.seed, **saved.parameters
        ),
        epochs=int(training["epochs"]),
        batch_size=int(training["batch_size"]),
        mode=training["mode"],
        concurrency=int(document["concurrency"]),
        global_test_size=int(document["global_test_size"]),
        grid_device=int(document["grid_device"]),
        device_prefix=str(document["devices"]["prefix"]),
        job_timeout=float(document["timeout"]),
    )
