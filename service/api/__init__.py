"""The HTTP layer: FastAPI app factory, routers per resource, the error table, tensor codecs."""

from service.api.app import create_app

__all__ = ["create_app"]
