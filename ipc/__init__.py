"""para.ipc: the wire.

Message types (`messages`), the one msgpack codec (`codec`), runtime-directory
endpoint paths (`endpoints`), ZeroMQ socket setup (`sockets`) and both ends of
every socket parad binds (`channels`). No policy and
no I/O loops live here; the daemon and the client deal only in the typed
messages defined in `para.ipc.messages`.
"""

PROTOCOL_VERSION = 1
