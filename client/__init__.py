"""para.client: the thin client of the para daemon.

Importing it loads pyzmq and msgpack only (no psutil, yaml, prometheus_client
or daemon code), so agents and scripts pay little to use it.
"""

from para.client.aio import AsyncBatchHandle, AsyncClient, AsyncTask
from para.client.batch import BatchHandle
from para.client.client import Client, TaskFuture
from para.client.errors import (
    DaemonUnavailable, InvalidRequest, NotFound, ParaError, PoolUnavailable, QueueFull, TaskError, TaskTimeout, ToolError,
)
from para.client.result import Chunk, Result

__all__ = [
    "Client", "TaskFuture", "BatchHandle", "AsyncClient", "AsyncTask", "AsyncBatchHandle", "Result", "Chunk", "ParaError", "DaemonUnavailable", "InvalidRequest", "NotFound",
    "QueueFull", "PoolUnavailable", "TaskError", "TaskTimeout", "ToolError",
]
