"""``fleet simulate``: drive a running service over HTTP as a fleet of phones would, and report on it.

harness      one personalization round over HTTP: evaluate, train (stream or jobs), save, restart, evaluate
report       the fleet summary, JSON and CSV reports, the rich table
plots        loss curves, accuracy before and after, the tutorial's prediction grid (matplotlib, Agg)
comparison   ``fleet simulate --dataset``: local-only, federated and fine-tuned arms, all server-side
comparison_report, comparison_plots   its tables, JSON and CSV reports, and PNGs
command      ``fleet simulate``: a service started or given, progress bars, files written

The data partitioners both it and the service use are ``service.data.partition``.
"""

from service.simulate.harness import Simulation, SimulationConfig, SimulationResult

__all__ = ["Simulation", "SimulationConfig", "SimulationResult"]
