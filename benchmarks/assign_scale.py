"""Assigning server-side data to a large fleet: 100,000 device directories, each given its split.

The device directories are made once in a temporary directory (not timed); then, for each scheme in
turn (iid, Dirichlet alpha 0.5, shards k=2; 600 train / 100 test examples a device, the real
Fashion-MNIST labels), ``assign_many`` computes every device's split and writes its ``assignment.npz``
(the first scheme writes new files, the others replace them, as assigning again does).

Peak RSS (``ru_maxrss``) is the process's while assigning: its high-water mark is reset
(``/proc/self/clear_refs``) after the dataset is loaded, whose images alone take the loader ~640 MB at
its peak (shown below the table). Bytes on disk are the blocks an assignment file takes (its size in
brackets). Creating a file is most of the cost, and depends on the filesystem and its recent churn:
``--dir /dev/shm`` (tmpfs) shows the cost of the rest.

    .venv/bin/python -m benchmarks.assign_scale [--devices 100000] [--dir DIR] [--schemes iid,...]

At a million devices (issue 24's target: under 60 s and 1 GB a scheme) one scheme is enough:
``--devices 1000000 --schemes iid``.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks._common import console, machine, table
from service.data.assignment import ASSIGNMENT_FILE, assign_many
from service.data.pools import ClassPools
from service.data.spec import PartitionSpec
from service.model.dataset import load_fashion_mnist

SCHEMES = {
    "iid": PartitionSpec(kind="iid", train_per_device=600, test_per_device=100),
    "dirichlet, alpha 0.5": PartitionSpec(
        kind="dirichlet", alpha=0.5, train_per_device=600, test_per_device=100
    ),
    "shards, k=2": PartitionSpec(
        kind="shards", classes_per_device=2, train_per_device=600, test_per_device=100
    ),
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def reset_peak_rss() -> bool:
    """Start the high-water mark again from the current RSS (Linux 4.0+); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def device_names(count: int) -> Iterator[str]:
    width = len(str(count - 1))
    return (f"dev-{i:0{width}d}" for i in range(count))


def device_dirs(parent: Path, count: int) -> None:
    for name in device_names(count):
        (parent / name).mkdir()


def places(parent: Path, count: int) -> Iterator[tuple[str, Path]]:
    """``(device ID, directory)`` as ``assign_many`` takes them, made as it goes: a list of a million
    would take ~300 MB."""
    return ((name, parent / name) for name in device_names(count))


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding ``path`` (Linux ``/proc/mounts``), with its mount point."""
    best = ("", "?")
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "?"
    for line in mounts:
        fields = line.split()
        if (
            len(fields) > 2
            and str(path).startswith(fields[1].rstrip("/") + "/")
            and len(fields[1]) > len(best[0])
        ):
            best = (fields[1], fields[2])
    return f"{best[1]} ({best[0]})"


def on_disk(parent: Path, count: int) -> tuple[float, float]:
    """Mean allocated and apparent bytes of the assignment files."""
    allocated = apparent = 0
    for _, directory in places(parent, count):
        stat = os.stat(directory / ASSIGNMENT_FILE)
        allocated, apparent = allocated + stat.st_blocks * 512, apparent + stat.st_size
    return allocated / count, apparent / count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--dir", help="where to make the device directories (default: the temp dir)")
    parser.add_argument(
        "--schemes", default=",".join(SCHEMES), help=f"which, comma-separated (default: {','.join(SCHEMES)})"
    )
    args = parser.parse_args()
    schemes = {name: SCHEMES[name] for name in args.schemes.split(",")}

    data = load_fashion_mnist()
    pools = ClassPools.build(data.train_labels, data.test_labels)
    loaded_mb = peak_rss_mb()
    del data  # the labels live on in the pools; the images are not needed
    gc.collect()

    rows, reset = [], True
    with tempfile.TemporaryDirectory(prefix="assign-scale-", dir=args.dir) as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        device_dirs(root, args.devices)
        made = time.perf_counter() - start
        for name, spec in schemes.items():
            reset = reset_peak_rss() and reset
            start = time.perf_counter()
            count = assign_many(places(root, args.devices), spec, pools, "fashion-mnist", "benchmark", root)
            seconds = time.perf_counter() - start
            allocated, apparent = on_disk(root, args.devices)
            rows.append(
                (
                    name,
                    f"{count:,}",
                    f"{seconds:.1f}",
                    f"{count / seconds:,.0f}",
                    f"{peak_rss_mb():.0f}",
                    f"{allocated:,.0f} ({apparent:,.0f})",
                )
            )
        filesystem = filesystem_of(root)

    table(
        f"assign_many: {args.devices:,} devices, 600 train + 100 test each, on {filesystem} ({machine()})",
        ["scheme", "devices", "seconds", "devices/s", "peak RSS MB", "bytes on disk per device (file size)"],
        rows,
    )
    console.print(
        f"making the {args.devices:,} device directories (not counted): {made:.1f} s "
        f"({args.devices / made:,.0f}/s)"
    )
    console.print(
        f"peak RSS of loading Fashion-MNIST (images included), before assigning: {loaded_mb:.0f} MB"
    )
    if not reset:
        console.print("(the peak RSS could not be reset: the column includes loading the dataset)")


if __name__ == "__main__":
    main()
