"""What the server and its clients share on the wire: header names, the error shape, the cluster's view.

Pure Python over ``service.errors``: the client imports it without importing the server.
"""
