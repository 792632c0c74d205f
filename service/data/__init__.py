"""Data the service trains on: server-side datasets, their splits among devices, each device's share."""
