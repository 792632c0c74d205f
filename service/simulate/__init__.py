"""``fleet simulate``: drive a running service over HTTP as a fleet of phones would, and report on it.

harness      one personalization round over HTTP: evaluate, train (stream or jobs), save, restart, evaluate
report       the fleet summary, JSON and CSV reports, the rich table
plots        loss curves, accuracy before and after, the tutorial's prediction grid (matplotlib, Agg)
comparison   ``fleet simulate --dataset``: local-only, federated and fine-tuned arms, all server-side
comparison_config, comparison_result   what it compares and what it found
comparison_report, comparison_plots   its tables, JSON and CSV reports, and PNGs
arguments    ``fleet simulate``'s options and their checks (light: ``fleet --help`` imports it)
command      a run: a service started or given, progress bars, files written

The data partitioners both it and the service use are ``service.data.partition``.
"""
