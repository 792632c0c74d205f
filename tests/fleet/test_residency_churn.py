"""The residency cap under concurrent churn: activating threads evict down to the cap, never below."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np

from service.fleet import Fleet

Batch = tuple[np.ndarray, np.ndarray]


def test_concurrent_activations_evict_down_to_the_cap_not_below(tmp_path: Path, train_batch: Batch) -> None:
    cap, devices, threads = 10, 80, 8
    fleet = Fleet(tmp_path, max_resident=cap)
    ids = [f"d{i}" for i in range(devices)]
    fleet.create_many(ids)
    todo: queue.Queue[str] = queue.Queue()
    for _ in range(2):
        for device_id in ids:
            todo.put(device_id)
    errors: list[BaseException] = []
    x, y = train_batch

    def worker() -> None:
        try:
            while True:
                try:
                    device_id = todo.get_nowait()
                except queue.Empty:
                    return
                fleet.get(device_id).run("train", {"x": x[:10], "y": y[:10]})  # evicting it spills
        except BaseException as exc:
            errors.append(exc)

    running = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join(120)
    assert errors == []
    stats = fleet.residency_stats()
    resident = sum(fleet.get(i).resident for i in ids)
    assert stats.resident == resident == cap, "over-eviction: the resident set fell below the cap"
    assert stats.evictions == stats.activations - cap
    fleet.close()
