"""Flower's Message API, imported in one place so a missing extra gives one clear line."""

from __future__ import annotations

try:
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import FedAvg
    from flwr.supercore import log
except ImportError as e:  # flwr missing, or older than the Message-API strategies (1.22)
    raise ImportError(
        f'fedarena.integrations.flower needs Flower >= 1.22: pip install "fedarena[flower]" ({e})'
    ) from None

__all__ = [
    "Array",
    "ArrayRecord",
    "ClientApp",
    "ConfigRecord",
    "Context",
    "FedAvg",
    "Grid",
    "Message",
    "MessageType",
    "MetricRecord",
    "RecordDict",
    "log",
]
