"""parad's bound sockets: control, events and the five worker channels, bound together and closed together."""

from __future__ import annotations

import os
from dataclasses import dataclass

import zmq

from para.daemon import outbox
from para.daemon.config import Config
from para.daemon.frame_limits import worker_frame_limits
from para.daemon.runtime_dir import RuntimeDirError
from para.ipc import channels
from para.ipc.endpoints import Endpoints


@dataclass
class Listeners:
    ctx: zmq.Context
    control: zmq.Socket
    events: zmq.Socket
    workers: dict[str, zmq.Socket]   # channel name -> parad's end

    @classmethod
    def bind(cls, config: Config, endpoints: Endpoints) -> Listeners:
        """Bind every socket in the runtime dir (mode 0600); RuntimeDirError if they cannot listen there."""
        d = config.daemon
        ctx = zmq.Context()
        try:
            # The daemon answers oversized requests itself; the hard cap (4x) only stops abuse.
            # A short queue per client: what a client does not read waits, counted, in outbox.py.
            control = channels.bind_control(ctx, endpoints, 4 * d.max_message_size, outbox.SNDHWM)
            events = channels.bind_events(ctx, endpoints)
            workers = channels.bind_worker_channels(ctx, endpoints, worker_frame_limits(config))
            for path in endpoints.socket_paths():
                os.chmod(path, 0o600)
        except zmq.ZMQError as exc:
            ctx.destroy(linger=0)
            raise RuntimeDirError(f"cannot listen in the runtime dir {endpoints.runtime_dir}: {exc}; "
                                  f"pick another with --runtime-dir DIR") from None
        except BaseException:
            ctx.destroy(linger=0)
            raise
        return cls(ctx, control, events, workers)

    def close(self) -> None:
        for sock in self.workers.values():
            sock.close(linger=0)
        self.events.close(linger=0)
        self.control.close(linger=1000)   # it may still hold the last results for clients
        self.ctx.destroy(linger=0)
