"""Privacy for federated rounds, as a library below the rounds that use it: differential privacy's
settings, clipping and accounting (``settings``, ``clipping``, ``accounting``) and secure aggregation
(``secagg``). Pure numpy, Google's ``dp-accounting`` and ``cryptography``; it knows nothing of devices,
rounds or HTTP."""
