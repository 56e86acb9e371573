"""para.ipc: the wire.

Message types (`messages`), the one msgpack codec (`codec`), runtime-directory
endpoint paths (`endpoints`) and ZeroMQ socket setup (`sockets`). No policy and
no I/O loops live here; the daemon and the client deal only in the typed
messages defined in `para.ipc.messages`.
"""

PROTOCOL_VERSION = 1
