"""What secure aggregation's protocol costs per round, alone: SecAgg+ (``service.privacy.secagg``) with
its real key agreement, sealed shares, masks and unmasking, against summing the same updates in the
clear, in the same run.

Each row: a cohort of ``n`` updates of the MLP's size (101,770 values), its graph's degree ``k`` and
threshold ``t``, devices that drop out after sharing keys; the protocol's setup (advertise and share
keys for everyone), masking and receiving each input, unmasking (dropouts recovered); the whole against
the plain sum; and per device the bytes, key agreements, keystream and shares beyond a plain upload
(``SecureRound.planned_traffic``, equal to a surviving device's measured ``traffic``).

    .venv/bin/python -m benchmarks.secagg_cost            # 10, 100 (full graph and SecAgg+), 1000 (SecAgg+)
    .venv/bin/python -m benchmarks.secagg_cost --quick    # 10 and 30 only (seconds)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from service.privacy.secagg import SecAggSettings, SecureRound, mask

DIMENSION = 101_770
"""The embedded MLP's floating weights (784-128-10)."""
FULL = [
    (10, SecAggSettings(threshold=6), 0),
    (10, SecAggSettings(threshold=6), 2),
    (100, SecAggSettings(threshold=51), 0),
    (100, SecAggSettings(threshold=51), 10),
    (100, SecAggSettings(threshold=8, neighbors=14), 10),
    (1000, SecAggSettings(threshold=11, neighbors=20), 50),
]
QUICK = [(10, SecAggSettings(threshold=6), 2), (30, SecAggSettings(threshold=5, neighbors=8), 3)]


def row(n: int, settings: SecAggSettings, dropped: int) -> list[str]:
    """One cohort's protocol timed against the plain sum of the same updates."""
    cohort = [f"d{i:04d}" for i in range(n)]
    updates = {d: np.random.default_rng(i).normal(0, 0.05, DIMENSION) for i, d in enumerate(cohort)}
    sending = cohort[dropped:]
    started = time.perf_counter()
    plain = np.zeros(DIMENSION)
    for device in sending:
        plain += updates[device]
    summed = time.perf_counter()
    secure = SecureRound(settings, cohort, DIMENSION, (1, 1))
    set_up = time.perf_counter()
    for i, device in enumerate(sending):
        secure.receive(device, mask(updates[device], secure.keys(device), np.random.default_rng(i)))
    masked = time.perf_counter()
    total, count = secure.unmask()
    done = time.perf_counter()
    error = float(np.max(np.abs(total - plain)))
    bound = secure.field.bound(count)
    assert count == len(sending) and error <= bound, (error, bound)
    traffic = SecureRound.planned_traffic(settings, n, DIMENSION)
    return [
        f"{n:,}",
        str(secure.degree),
        str(settings.threshold),
        str(dropped),
        f"{set_up - summed:.2f}",
        f"{(masked - set_up) / len(sending) * 1000:.1f}",
        f"{done - masked:.2f}",
        f"{done - summed:.2f}",
        f"{(done - summed) / (summed - started):.0f}x",
        f"{traffic.upload_bytes:,} ({traffic.upload_bytes / (4 * DIMENSION):.1%})",
        f"{traffic.download_bytes:,}",
        str(traffic.key_agreements),
        f"{traffic.prg_bytes / 1e6:.1f} MB",
        f"{error:.1e} / {bound:.1e}",
    ]


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--quick", action="store_true", help="two small cohorts only")
    args = parser.parse_args()
    table = Table(title=f"SecAgg+ per round, updates of {DIMENSION:,} values, against the plain sum")
    for header in (
        "cohort", "k", "t", "dropped", "setup s", "mask+receive ms/device", "unmask s", "total s",
        "vs plain sum", "extra upload B/device (of a float32 upload)", "extra download B",
        "key agreements", "keystream", "max error / bound",
    ):  # fmt: skip
        table.add_column(header, justify="right")
    for n, settings, dropped in QUICK if args.quick else FULL:
        table.add_row(*row(n, settings, dropped))
    Console(width=220).print(table)


if __name__ == "__main__":
    main()
