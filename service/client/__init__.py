"""The service from a test harness, over HTTP: ``FleetClient``.

It raises the same error classes as the server (``service.errors``) and never imports the server.

fleet_client   ``FleetClient``: one method per operation of the HTTP API
connection     the HTTP connection: error answers raised, device calls routed to owner shards
tensors        tensors on the wire (npz or JSON)
"""

from service.client.fleet_client import FleetClient

__all__ = ["FleetClient"]
