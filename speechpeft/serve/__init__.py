"""`speechpeft serve`: one base model, many adapters, requests batched across adapters."""

from .app import ServeOptions, create_app
from .pool import AdapterPool, UnknownAdapter
from .worker import DecodeWorker, QueueFull, Request

__all__ = ["AdapterPool", "DecodeWorker", "QueueFull", "Request", "ServeOptions", "UnknownAdapter", "create_app"]
