"""A mutation fuzzer over models: seeded mutants of the embedded model and of every hostile model, each
verified and, where accepted, loaded and invoked (every signature, zero inputs of its shapes, a path in
a temp dir for string inputs) in a child process; no child may die of a signal.

    .venv/bin/python -m benchmarks.model_fuzz --mutants 2000 --seed 0

The core lives in ``tests/model_mutants.py``; ``tests/runtime/test_model_fuzz.py`` runs a short slice.
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks._common import table
from tests import model_mutants


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--verifier-only",
        action="store_true",
        help="no trial run in a process of its own: the verifier alone guards the child (shows its gaps)",
    )
    args = parser.parse_args()
    started = time.monotonic()
    seeds = model_mutants.seed_models()
    made = model_mutants.mutants(seeds, args.mutants, args.seed)
    report = model_mutants.run(made, with_trials=not args.verifier_only)
    seconds = time.monotonic() - started
    rows = [("outcome", name, count) for name, count in sorted(report.outcomes.items())]
    rows += [("refused by", name, count) for name, count in sorted(report.refused_by.items())]
    rows += [("mutation", name, count) for name, count in sorted(report.by_mutation.items())]
    table(
        f"{args.mutants} mutants of {len(seeds)} models, seed {args.seed},\n"
        f"{'verifier only' if args.verifier_only else 'with trial runs'}, {seconds:.0f} s",
        ("", "what", "mutants"),
        rows,
    )
    for culprit in report.crashes + report.hangs:
        print(f"child died or hung on {culprit}")
    return 1 if report.crashes or report.hangs else 0


if __name__ == "__main__":
    sys.exit(main())
