"""The one address of a sharded fleet: routes each device's calls to its owner, merges fleet-wide answers.

``app`` builds the front's Starlette app (``create_front``); ``shards`` is its hop to the shards (the
cached member view, retries, relaying a shard's answer); ``routes`` holds its routes, a module per
resource as the service's; ``calls`` what they share.
"""
