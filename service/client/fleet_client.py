"""``FleetClient``: the service from a test harness, one method per operation (binary tensors by default).

It raises the same error classes as the server (``service.errors``) and never imports the server.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import numpy as np

from service.client.connection import ServiceConnection
from service.client.tensors import NPZ, Tensors, tensor_body, tensor_outputs

JOB_ENDED = ("succeeded", "failed", "cancelled", "interrupted", "dropped")
"""The states a job ends in."""


def _mix_body(mix: str | Mapping[str, Any]) -> str | dict[str, Any]:
    return mix if isinstance(mix, str) else dict(mix)


class FleetClient(ServiceConnection):
    """A client for one fleet service.

    ``binary=True`` sends and receives tensors as ``application/x-npz``; ``False`` uses JSON.
    ``api_key`` is sent as ``Authorization: Bearer KEY`` (none is needed on loopback when the service
    has no keys configured). Pass ``transport`` (e.g. ``httpx.ASGITransport``) to talk to an app in-process.

    ``direct=True`` takes the fast path to a sharded fleet: device calls go straight to the owning
    shard's own address (from ``GET /v1/fleet/shards``), one hop instead of two. A shard that is not
    the owner any more (421), is restarting or is moving the device answers before doing anything;
    the call then goes through the front, and the view is fetched again for the next one. Against a
    single process it changes nothing.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        binary: bool = True,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        direct: bool = False,
    ) -> None:
        super().__init__(base_url, api_key=api_key, timeout=timeout, transport=transport, direct=direct)
        self.binary = binary

    def shards(self) -> dict[str, Any]:
        """The fleet's member view: epoch, and each shard's address, node, process and devices."""
        return dict(self._json("GET", "/v1/fleet/shards"))

    # -- models ------------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/models")["models"])

    def model(self, name: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/models/{name}"))

    def add_model(self, name: str, content: bytes) -> dict[str, Any]:
        """Upload a ``.tflite`` (admin; the service must run with FLEET_ALLOW_MODEL_UPLOAD)."""
        return dict(self._json("PUT", f"/v1/models/{name}", content=content))

    def delete_model(self, name: str) -> None:
        self._request("DELETE", f"/v1/models/{name}")

    # -- devices -----------------------------------------------------------------------------

    def create_device(
        self,
        device_id: str | None = None,
        model: str | None = None,
        *,
        profile: Mapping[str, Any] | None = None,
        profile_mix: str | Mapping[str, Any] | None = None,
        profile_seed: int = 0,
    ) -> dict[str, Any]:
        """Create one device, with a ``profile`` or one drawn from ``profile_mix`` (not both)."""
        body: dict[str, Any] = {"id": device_id, "model": model}
        if profile is not None:
            body["profile"] = dict(profile)
        if profile_mix is not None:
            body |= {"profile_mix": _mix_body(profile_mix), "profile_seed": profile_seed}
        return dict(self._json("POST", "/v1/devices", json=body))

    def device(self, device_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/devices/{device_id}"))

    def devices(self, page_size: int = 1000, prefix: str = "") -> Iterator[dict[str, Any]]:
        """Every device (whose ID starts with ``prefix``), following the pagination."""
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size, "prefix": prefix}
            if after:
                params["after"] = after
            page = self._json("GET", "/v1/devices", params=params)
            yield from page["devices"]
            after = page["next_after"]
            if after is None:
                return

    def create_devices(
        self,
        ids: list[str] | None = None,
        *,
        count: int | None = None,
        prefix: str = "",
        model: str | None = None,
        profile: Mapping[str, Any] | None = None,
        profile_mix: str | Mapping[str, Any] | None = None,
        profile_seed: int = 0,
    ) -> list[str]:
        """Create many devices (IDs, or a count with a prefix); returns their IDs. With a ``profile``
        every device gets it; with a ``profile_mix`` each device's is drawn with ``profile_seed``."""
        body: dict[str, Any] = {"ids": ids, "count": count, "prefix": prefix, "model": model}
        if profile is not None:
            body["profile"] = dict(profile)
        if profile_mix is not None:
            body |= {"profile_mix": _mix_body(profile_mix), "profile_seed": profile_seed}
        return list(self._json("POST", "/v1/devices/bulk-create", json=body)["ids"])

    def delete_devices(self, ids: list[str]) -> int:
        return int(self._json("POST", "/v1/devices/bulk-delete", json={"ids": ids})["count"])

    def fleet(self) -> dict[str, Any]:
        """Fleet status: devices, resident interpreters, activations, evictions, spills, RSS."""
        return dict(self._json("GET", "/v1/fleet"))

    def delete_device(self, device_id: str) -> None:
        self._request("DELETE", f"/v1/devices/{device_id}")

    def reset(self, device_id: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/v1/devices/{device_id}/reset"))

    def restart(self, device_id: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/v1/devices/{device_id}/restart"))

    # -- device-local data and background training -------------------------------------------

    def add_samples(self, device_id: str, **inputs: Any) -> dict[str, Any]:
        """Append labelled samples (the train signature's inputs by name) to the device's store."""
        return dict(
            self._json("POST", f"/v1/devices/{device_id}/samples", **tensor_body(inputs, self.binary))
        )

    def samples(self, device_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/devices/{device_id}/samples"))

    def clear_samples(self, device_id: str) -> None:
        self._request("DELETE", f"/v1/devices/{device_id}/samples")

    def start_job(
        self,
        device_id: str,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        save: bool = False,
        shuffle: bool = True,
        seed: int | None = None,
        data: str | None = None,
        steps: int | None = None,
    ) -> dict[str, Any]:
        """Start training over the device's samples (``data="assigned"``: its assigned data; None: the
        samples if it has any, else its assigned data) in the background; returns the job (202).
        ``steps`` stops it after that many batches."""
        body = {
            "epochs": epochs,
            "batch_size": batch_size,
            "save": save,
            "shuffle": shuffle,
            "seed": seed,
            "data": data,
            "steps": steps,
        }
        return dict(self._json("POST", f"/v1/devices/{device_id}/jobs", json=body))

    def job(self, device_id: str, job_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/devices/{device_id}/jobs/{job_id}"))

    def jobs(self, device_id: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/v1/devices/{device_id}/jobs")["jobs"])

    def cancel_job(self, device_id: str, job_id: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/v1/devices/{device_id}/jobs/{job_id}/cancel"))

    def wait_job(
        self,
        device_id: str,
        job_id: str,
        timeout: float = 600.0,
        poll: float = 0.2,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job ends (``JOB_ENDED``); TimeoutError past ``timeout``.

        ``on_poll`` sees the job at every poll (to show progress, say).
        """
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(device_id, job_id)
            if on_poll is not None:
                on_poll(job)
            if job["state"] in JOB_ENDED:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {job_id} of device {device_id} still {job['state']} after {timeout} s"
                )
            time.sleep(poll)

    # -- datasets, evaluation, versions, rounds ---------------------------------------------

    def datasets(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/datasets")["datasets"])

    def dataset(self, name: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/datasets/{name}"))

    def add_dataset(
        self, name: str, label: str | None = "y", group: str | None = None, **arrays: np.ndarray
    ) -> dict[str, Any]:
        """Upload a dataset (admin): arrays named ``<split>/<input>`` (pass them as a dict with ``**``);
        ``group`` names the array of each sample's writer or user (the natural partition's)."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        params = {"label": label or "", **({"group": group} if group else {})}
        headers = {"content-type": NPZ}
        return dict(
            self._json(
                "PUT", f"/v1/datasets/{name}", content=buffer.getvalue(), headers=headers, params=params
            )
        )

    def delete_dataset(self, name: str) -> None:
        self._request("DELETE", f"/v1/datasets/{name}")

    def assign(
        self,
        dataset: str,
        *,
        ids: list[str] | None = None,
        prefix: str | None = None,
        all: bool = False,
        **scheme: Any,
    ) -> dict[str, Any]:
        """Give devices local data from ``dataset``: ``scheme="iid"`` (or dirichlet, interest, shards)
        and its parameters (``train_per_device``, ``test_per_device``, ``alpha``, ``seed``...), or a
        disjoint scheme (homogeneous, label_quantity, label_dirichlet, quantity_skew, feature_noise,
        natural) with ``labels_per_device``, ``beta``, ``noise`` or ``group``."""
        body = {"ids": ids, "prefix": prefix, "all": all, **scheme}
        return dict(self._json("POST", f"/v1/datasets/{dataset}/assign", json=body))

    def partition(self, dataset: str, scheme: str, devices: int, **parameters: Any) -> dict[str, Any]:
        """A disjoint partition's statistics, assigning nothing (``scheme="label_dirichlet"``, ``beta``)."""
        params = {"scheme": scheme, "devices": devices, **parameters}
        return dict(self._json("GET", f"/v1/datasets/{dataset}/partition", params=params))

    def partition_png(self, dataset: str, scheme: str, devices: int, **parameters: Any) -> bytes:
        """Its heatmap: examples of each label on each device (``split="test"`` for the test split's)."""
        params = {"scheme": scheme, "devices": devices, **parameters}
        return self._request("GET", f"/v1/datasets/{dataset}/partition.png", params=params).content

    # -- profiles ----------------------------------------------------------------------------

    def profile_mixes(self) -> list[dict[str, Any]]:
        """The built-in profile mixes, as ``describe()`` shows them (``GET /v1/profiles/mixes``)."""
        return list(self._json("GET", "/v1/profiles/mixes")["mixes"])

    def profile_mix(self, name: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/profiles/mixes/{name}"))

    def assign_profiles(
        self,
        mix: str | Mapping[str, Any],
        *,
        ids: list[str] | None = None,
        prefix: str | None = None,
        all: bool = False,
        seed: int = 0,
    ) -> dict[str, Any]:
        """Give the selected devices profiles drawn from ``mix`` (a built-in name or a mix object);
        returns ``{"assigned": n, "classes": {class: n}}``."""
        body = {"mix": _mix_body(mix), "ids": ids, "prefix": prefix, "all": all, "seed": seed}
        return dict(self._json("POST", "/v1/profiles/assign", json=body))

    def set_profile(self, device_id: str, profile: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """Give the device ``profile`` (returns its view), or take its profile away (None)."""
        if profile is None:
            self._request("DELETE", f"/v1/devices/{device_id}/profile")
            return None
        return dict(self._json("PUT", f"/v1/devices/{device_id}/profile", json=dict(profile)))

    def assignment(self, device_id: str) -> dict[str, Any] | None:
        found = self._json("GET", f"/v1/devices/{device_id}/assignment")["assignment"]
        return None if found is None else dict(found)

    def evaluate(
        self,
        device_id: str,
        *,
        dataset: str | None = None,
        split: str = "test",
        limit: int | None = None,
        version: int | None = None,
    ) -> dict[str, Any]:
        """Accuracy of the device's weights (or of ``version`` of its model) on its own assigned data
        (``dataset`` None) or a dataset's split."""
        body = {"dataset": dataset, "split": split, "limit": limit, "version": version}
        return dict(self._json("POST", f"/v1/devices/{device_id}/evaluate", json=body))

    def adopt(self, device_id: str, version: int | None = None, save: bool = False) -> dict[str, Any]:
        body = {"version": version, "save": save}
        return dict(self._json("POST", f"/v1/devices/{device_id}/adopt", json=body))

    def versions(self, model: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/models/{model}/versions"))

    def start_rounds(self, **body: Any) -> dict[str, Any]:
        """Start a run of federated rounds (``POST /v1/rounds``: ``prefix``/``ids``/``all``, ``rounds``,
        ``participants``, ``epochs``, ``batch_size``, ``aggregation``, ``seed``..., and for profiled
        devices ``deadline`` (simulated seconds), ``stragglers`` ("drop" or "stale"), ``start_time``);
        returns it (202)."""
        return dict(self._json("POST", "/v1/rounds", json=body))

    def round_run(self, run_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/rounds/{run_id}"))

    def cancel_rounds(self, run_id: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/v1/rounds/{run_id}/cancel"))

    def wait_rounds(
        self,
        run_id: str,
        timeout: float = 3600.0,
        poll: float = 0.2,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the run ends (``JOB_ENDED``); TimeoutError past ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.round_run(run_id)
            if on_poll is not None:
                on_poll(run)
            if run["state"] in JOB_ENDED:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"round run {run_id} still {run['state']} after {timeout} s")
            time.sleep(poll)

    def history(self, device_id: str) -> list[dict[str, Any]]:
        """The device's loss history: one entry per training step (calls and jobs)."""
        return list(self._json("GET", f"/v1/devices/{device_id}/history")["history"])

    # -- signatures --------------------------------------------------------------------------

    def run(self, device_id: str, signature: str, inputs: Tensors | None = None) -> dict[str, np.ndarray]:
        """Run any signature of the device's model; outputs by name as arrays."""
        path = (
            f"/v1/devices/{device_id}/{signature}"
            if signature in ("train", "infer", "save", "restore")
            else f"/v1/devices/{device_id}/signatures/{signature}"
        )
        kwargs = tensor_body(inputs or {}, self.binary)
        kwargs["headers"]["accept"] = NPZ if self.binary else "application/json"
        return tensor_outputs(self._request("POST", path, **kwargs))

    def train(self, device_id: str, **inputs: Any) -> dict[str, np.ndarray]:
        return self.run(device_id, "train", inputs)

    def infer(self, device_id: str, **inputs: Any) -> dict[str, np.ndarray]:
        return self.run(device_id, "infer", inputs)

    def save(self, device_id: str) -> None:
        self.run(device_id, "save")

    def restore(self, device_id: str) -> None:
        self.run(device_id, "restore")
