"""The largest frame parad takes from its workers, per worker channel.

ZeroMQ drops a peer whose frame passes its socket's MAXMSGSIZE before the
frame is in memory, so a bound here keeps a worker (or a command that got at
its sockets) from growing parad by the size of one frame. The bounds must
hold every frame a healthy worker sends, or its results would be lost:

- command: `Ready`, or a `Relayed` frame of a client inside a command. The
  worker's relay takes client frames of at most max_message_size plus
  RELAY_SLACK (child_relay.py); a `Relayed` adds the task id (a client's
  string, itself under max_message_size) and a few ids.
- data (and the small channels, which share the bound): a batch of Chunk and
  Done frames. The worker packs at most BATCH_BYTES in a batch unless one
  frame is larger, which then goes alone; the largest is a `Done`: stdout and
  stderr of up to the pool's output_bytes each, plus the tool's value: an
  echo of a request (under max_message_size), a read (lines of at most
  max_bytes; UTF-8 replacement and per-line packing stay under 8x), or the
  files or matches glob and grep parse out of at most RG_OUTPUT_CAP of rg's
  output.
"""

from __future__ import annotations

from para.daemon.child_relay import RELAY_SLACK
from para.daemon.config import Config
from para.daemon.tools.ripgrep import RG_OUTPUT_CAP
from para.daemon.data_out import BATCH_BYTES

SLACK = 1 << 20   # message envelopes, ids, status fields


def worker_frame_limits(config: Config) -> dict[str, int]:
    """MAXMSGSIZE for each of parad's worker channel sockets, by channel name."""
    size = config.daemon.max_message_size
    command = 2 * size + 2 * RELAY_SLACK
    result = 2 * _largest_output(config) + max(4 * size, RG_OUTPUT_CAP, 8 * _largest_read(config))
    other = max(BATCH_BYTES, result) + SLACK
    return {"command": command, "event": other, "data": other, "error": other, "metrics": other}


def _largest_output(config: Config) -> int:
    # Pools whose tool runs commands have sandbox limits; a task may only lower them.
    caps = [0]
    for name in config.pools:
        limits = getattr(getattr(config.pool_options(name), "sandbox", None), "limits", None)
        if limits is not None:
            caps.append(int(limits.output_bytes))
    return max(caps)


def _largest_read(config: Config) -> int:
    return max([0, *(int(getattr(config.pool_options(name), "max_bytes", 0)) for name in config.pools)])
