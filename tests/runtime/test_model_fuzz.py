"""A short seeded slice of the model mutation fuzzer (``benchmarks/model_fuzz.py`` runs thousands).

The verifier alone guards the child here (no trial run in a process of its own): a mutant that kills the
child is a gap in the verifier, and the child's signal fails the test.
"""

from __future__ import annotations

from tests import model_mutants

MUTANTS = 250
"""Seed 0's first 250 hold mutant 247, a rewired MUL that XNNPACK's graph fusion aborted on before the
verifier refused builtins whose output nothing reads."""


def test_no_mutant_kills_a_child_the_verifier_guards() -> None:
    made = model_mutants.mutants(model_mutants.seed_models(), MUTANTS, seed=0)
    report = model_mutants.run(made, with_trials=False)
    assert not report.crashes and not report.hangs, model_mutants.summary(report)
    assert sum(report.outcomes.values()) == MUTANTS, model_mutants.summary(report)
    assert report.refused_by and report.outcomes["refused"] < MUTANTS, model_mutants.summary(report)
