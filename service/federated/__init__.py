"""Federated rounds on server-side data: datasets, assignments, model versions, aggregation."""
