"""The front's routes, a module per resource as the service's (``service.api.routes``); each module's
``routes`` is its list, over the ``Front`` of the app serving the call."""
