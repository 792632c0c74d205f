"""What running a model in worker processes costs (``FLEET_MODEL_ISOLATION=process``), per call and per
device, against the same model's interpreters in this process, measured in the same run.

The model is the embedded default, loaded twice: as it ships (in-process) and as an added model would
be (isolated, in a pool of workers). Per call: a train step (batch 100) and infer (batch 1), one after
another; throughput with two threads against two workers. Per device: making an interpreter, and the
resident memory of 100 trained interpreters (this process's growth, against the workers').

    .venv/bin/python -m benchmarks.isolation [--calls 2000] [--devices 100]
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable

from benchmarks._common import batch, machine, ms, percentile, table, timed
from service.fleet.fleet import process_rss_bytes
from service.fleet.models import embedded_model_path
from service.runtime import CompiledModel
from service.runtime.isolation import Isolation, load_isolated

COLUMNS = [
    "path",
    "new interpreter ms",
    "train b100 p50 ms",
    "infer b1 p50 ms",
    "infer b1 p99 ms",
    "train steps/s, 2 threads",
]


def steps_per_s(run: Callable[[int], object], threads: int, seconds: float) -> float:
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        while time.perf_counter() < stop:
            run(i)
            counts[i] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(counts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    content = embedded_model_path().read_bytes()
    x, y = batch()
    one = {"x": x[:1]}
    started = time.perf_counter()
    isolated = load_isolated("isolated", content, 1, Isolation(workers=2))
    start_seconds = time.perf_counter() - started
    isolated.interpreter()  # the second worker
    worker_rss = [w.resident_bytes() for w in isolated.isolated._workers]
    models = {"in-process": CompiledModel.load("local", content), "isolated": isolated}

    rows = []
    for kind, model in models.items():
        made = timed(model.interpreter, 50)
        a, b = model.interpreter(), model.interpreter()
        train = timed(lambda a=a: a.run("train", {"x": x, "y": y}), args.calls // 4)
        infer = timed(lambda a=a: a.run("infer", one), args.calls)
        pair = (a, b)
        two = steps_per_s(lambda i, pair=pair: pair[i].run("train", {"x": x, "y": y}), 2, args.seconds)
        rows.append((kind, percentile(made, 50), percentile(train, 50), percentile(infer, 50),
                     percentile(infer, 99), two))  # fmt: skip
    base = rows[0]
    table(
        f"Isolation per call ({machine()}; workers started in {start_seconds:.1f} s)",
        COLUMNS,
        [
            *[(r[0], ms(r[1]), ms(r[2]), ms(r[3]), ms(r[4]), f"{r[5]:.0f}") for r in rows],
            ("isolated / in-process", *(f"{rows[1][i] / base[i]:.2f}" for i in range(1, 6))),
        ],
    )

    memory = []
    for kind, model in models.items():
        pool = getattr(model, "isolated", None)

        def rss(pool: object = pool) -> int:
            workers = getattr(pool, "_workers", None)
            return sum(w.resident_bytes() for w in workers) if workers else process_rss_bytes()

        before = rss()
        kept = [model.interpreter() for _ in range(args.devices)]
        for interpreter in kept:
            interpreter.run("train", {"x": x, "y": y})
        memory.append((kind, (rss() - before) / args.devices))
        del kept
    table(
        f"Isolation per device ({args.devices} trained interpreters)",
        ["path", "resident MB per device", "where"],
        [
            (memory[0][0], f"{memory[0][1] / 1e6:.2f}", "this process"),
            (memory[1][0], f"{memory[1][1] / 1e6:.2f}", "the workers"),
            ("a worker, fixed", f"{sum(worker_rss) / len(worker_rss) / 1e6:.0f}", "TensorFlow and the model"),
        ],
    )
    isolated.close()


if __name__ == "__main__":
    main()
