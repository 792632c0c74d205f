"""Personalization on a simulated fleet: partitions, the ``fleet simulate`` harness, its reports and plots.

partition   label-skewed splits of a dataset across devices (pure numpy)
harness     one round over HTTP: evaluate, train (stream or jobs), save, restart, evaluate
report      the fleet summary, JSON and CSV reports, the rich table
plots       loss curves, accuracy before and after, the tutorial's prediction grid (matplotlib, Agg)
federated   ``fleet simulate --dataset``: local-only, federated and fine-tuned arms, all server-side
federated_report, federated_plots   its tables, JSON and CSV reports, and PNGs
command     ``fleet simulate``: a service started or given, progress bars, files written
"""

from service.personalization.harness import Simulation, SimulationConfig, SimulationResult
from service.personalization.partition import DeviceSplit, PartitionSpec, partition

__all__ = ["DeviceSplit", "PartitionSpec", "Simulation", "SimulationConfig", "SimulationResult", "partition"]
