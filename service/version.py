"""The package version, in a module of its own so that the server can name it without importing the client."""

__version__ = "0.1.0"
