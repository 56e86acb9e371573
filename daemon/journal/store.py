"""The journal: an SQLite database (WAL) in the state directory that keeps every accepted task.

Writes are grouped: helpers say what changed (`changed`, `keep`, `batch`;
`untold`: a new task's first write may wait for its end), and `commit`
writes it all in one transaction, once per loop turn (commits.py), a task
that changed several times since the last one as one row. What a commit records
is acknowledged only after it (the supervisor holds Accepted and Done frames
until then), and a task's `running` state is committed before its
assignment leaves (`record_starts`): so a task a restarted parad does not
know was never started.

Durability: `batched` commits with synchronous=NORMAL, and a thread syncs
them to disk within `sync_interval` (syncer.py); `sync` commits with
synchronous=FULL, so every commit is on disk before anything it records is
acknowledged.

A commit that fails (a full disk) is rolled back, nothing is lost from
memory, and the journal is in trouble: new submissions are refused
(`trouble` says why) and the commit is tried again, at most every
RETRY_EVERY seconds, until it goes through.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from para.daemon import retries
from para.daemon.config import JournalSection
from para.daemon.journal import rows
from para.daemon.journal.retention import Retention
from para.daemon.journal.syncer import Syncer, fsync
from para.daemon.journal.transaction import transaction
from para.daemon.tasks import TaskRecord
from para.ipc import codec
from para.ipc import messages as m

log = logging.getLogger("parad")

RETRY_EVERY = 0.5       # seconds between commits tried while the journal cannot write (supervisor.py wakes for it)
# Seconds a task accepted without an ack may wait for its first write (its start's or end's, if sooner):
# the tasks of a big map() wait in the queue for seconds, and a write of each as queued was a third of their rows.
UNTOLD_WAIT = 5.0
# How long, how many bytes of results and how many rows the ends of untold tasks may wait for their
# commit, their Dones already sent (`keep`): a run() loop then commits a few rows at a time, not one per call.
QUIET_WAIT = 0.05
QUIET_BYTES = 4 << 20
QUIET_ROWS = 1024
BATCH_UPSERT = ("INSERT INTO batches (id, on_failure, after, first_failure, accepted, ended) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET first_failure = excluded.first_failure, ended = excluded.ended")


class Journal:
    """Tasks on disk; see the module docstring."""
    durable = True

    def __init__(self, conn: sqlite3.Connection, path: Path, settings: JournalSection, lock: int = -1) -> None:
        self.conn = conn
        self._lock = lock   # a descriptor holding the state directory's flock (opening.py)
        self.path = path
        self.results_dir = path.parent / "results"
        self.settings = settings
        self._dirty: dict[str, TaskRecord] = {}
        self._history: dict[str, list[rows.Entry]] = {}   # states since the last write, per task
        self._ended: dict[str, bytes] = {}     # encoded Done of tasks ended since the last commit
        self._batches: dict[str, tuple[Any, ...]] = {}
        self._respec: set[str] = set()          # known tasks whose spec changed since the last commit
        self._written: dict[str, int] = {}      # live tasks that have a row: their spec's bytes
        self._with_env: set[str] = set()       # live tasks whose row's spec holds the caller's environment
        self._untold: dict[str, TaskRecord] = {}   # new tasks nobody was told of, oldest first (`untold`)
        self._quiet: dict[str, TaskRecord] = {}    # untold tasks that ended, told before their row is written (`keep`)
        self._quiet_since = 0.0                    # when the oldest of them ended
        self._quiet_bytes = 0                      # their results' bytes
        self._replacing: set[str] = set()       # new tasks that took the id of one ended since the last commit
        self.dirty_since = 0.0                  # when the oldest change waiting for a commit was made
        self._new_files: list[Path] = []        # result files written since the last commit
        self.syncer = Syncer(path, settings.sync_interval)
        self.trouble: str | None = None        # why the journal cannot write, until a commit goes through
        self._retry_at = 0.0
        self.commits = 0
        self.failures = 0
        self.rows_written = 0   # inserts and updates: a task that ends within one commit costs one
        self.retention = Retention(conn, self.results_dir, settings)

    # ---- what changed ---------------------------------------------------------

    def changed(self, record: TaskRecord, spec: bool = False) -> None:
        """`record` changed state (and its spec, if `spec`): its row is written, as it is then, at the next commit."""
        task_id = record.spec.id
        if self._untold:
            self._untold.pop(task_id, None)
        if self._quiet and task_id in self._quiet and self._quiet[task_id] is not record:
            self._quiet_bytes -= self._quiet.pop(task_id).size
            self._reused(task_id)
        if not self._dirty:
            self.dirty_since = time.monotonic()
        elif self._dirty.get(task_id, record) is not record:
            self._reused(task_id)
        self._dirty[task_id] = record
        self._note(record)
        if spec:
            self._respec.add(task_id)

    def untold(self, record: TaskRecord) -> None:
        """`record` was just accepted and its client was not told (no ack asked): its first write may
        wait, up to UNTOLD_WAIT, for its start if it may not run twice (`record_starts`), else for its
        end, so that a quick task is one row written once (two for a command: its start and its end).
        A crash meanwhile takes back nothing acknowledged and nothing started that may not run again:
        its client submits it again. Batch, nested and keyed tasks are written at once, and any other
        change (a start that must be kept, a retry) writes it at the next commit."""
        task_id = record.spec.id
        if (self._dirty.get(task_id) is record and task_id not in self._written and task_id not in self._replacing
                and record.batch is None and record.parent is None and record.spec.idempotency_key is None):
            del self._dirty[task_id]
            self._untold[task_id] = record

    def _reused(self, task_id: str) -> None:
        """A new task took the id of one that ended since the last commit: the new one's row replaces
        the old one's whole (INSERT OR REPLACE, its own spec), not an update of it with the old spec."""
        self._ended.pop(task_id, None)
        self._history.pop(task_id, None)
        self._written.pop(task_id, None)
        self._with_env.discard(task_id)
        self._replacing.add(task_id)   # its row replaces the old one's at the next commit, not later

    def keep(self, record: TaskRecord, wire: bytes) -> bool:
        """`record` ended; `wire` is its encoded Done, kept with it. Whether its Done must wait for the
        commit: not that of an untold task (with `batched` durability). Nobody was told of it and it
        may run again, so its client may be told at once and its row follow within QUIET_WAIT: a
        crash before then loses only the row of a result already delivered (or, if it was not, the
        client submits the task again)."""
        task_id = record.spec.id
        self._ended[task_id] = wire
        if self.settings.durability == "batched" and self._untold.pop(task_id, None) is not None:
            self._note(record)
            if not self._quiet:
                self._quiet_since = time.monotonic()
            self._quiet[task_id] = record
            self._quiet_bytes += record.size
            return False
        self.changed(record)
        return True

    def batch(self, batch_id: str, on_failure: str, after: dict[str, list[str]], first_failure: str | None,
              accepted: float, ended: float | None) -> None:
        """A batch was accepted, failed first, or ended."""
        if not self._dirty and not self._batches:
            self.dirty_since = time.monotonic()
        self._batches[batch_id] = (batch_id, on_failure, json.dumps(after), first_failure, accepted, ended)

    def record_starts(self, records: list[TaskRecord]) -> bool:
        """`records` are about to start. Those that may not run again if this attempt is lost (not
        retry-safe, or no retries left) have their `running` state committed now; False if it cannot
        be. The others may run again: one whose row is written (it waited, queued, through a commit)
        is rewritten with the next commit, so that a crash after it counts this attempt; one without
        a row is written with its end or its untold wait (a crash before that runs it again as new)."""
        must = False
        for record in records:
            if not retries.should_retry(record, m.LOST):
                self.changed(record)
                must = True
            elif record.spec.id in self._written:
                self.changed(record)   # a row that says queued would give this attempt back after a crash
            else:
                self._note(record)
        return self.commit() if must else True

    def _note(self, record: TaskRecord) -> None:
        """A history line for `record`'s state now, written with its row's next write."""
        entries = self._history.get(record.spec.id)
        if entries is None:
            self._history[record.spec.id] = [rows.note(record)]
        else:
            entries.append(rows.note(record))

    @property
    def pending(self) -> bool:
        """Whether changes wait for a commit."""
        return bool(self._dirty or self._batches)

    def due(self) -> bool:
        """Whether the oldest change has waited commit_interval."""
        return time.monotonic() - self.dirty_since >= self.settings.commit_interval

    def due_in(self) -> float | None:
        """Seconds until a change must be committed (<= 0: now); None if none waits."""
        left = None
        if self._dirty or self._batches:
            left = self.dirty_since + self.settings.commit_interval - time.monotonic()
        if self._quiet:
            quiet = self._quiet_since + QUIET_WAIT - time.monotonic()
            left = quiet if left is None else min(left, quiet)
        if self._untold:
            oldest = next(iter(self._untold.values())).submitted + UNTOLD_WAIT - time.monotonic()
            left = oldest if left is None else min(left, oldest)
        return left

    def _take_untold(self, everything: bool) -> None:
        """The untold tasks that waited UNTOLD_WAIT (all of them if `everything`) join this commit; the
        ended ones (`_quiet`) too, if a commit happens anyway or they waited long enough."""
        deadline = time.monotonic() - UNTOLD_WAIT
        while self._untold:
            task_id, record = next(iter(self._untold.items()))
            if not everything and record.submitted > deadline:
                break
            del self._untold[task_id]
            self._to_write(task_id, record)
        if self._quiet and (everything or self._dirty or self._batches or self._quiet_due()):
            for task_id, record in self._quiet.items():
                self._to_write(task_id, record)
            self._quiet.clear()
            self._quiet_bytes = 0

    def _quiet_due(self) -> bool:
        return (len(self._quiet) >= QUIET_ROWS or self._quiet_bytes >= QUIET_BYTES
                or time.monotonic() - self._quiet_since >= QUIET_WAIT)

    def _to_write(self, task_id: str, record: TaskRecord) -> None:
        if not self._dirty:
            self.dirty_since = time.monotonic()
        self._dirty[task_id] = record

    @property
    def writable(self) -> bool:
        return self.trouble is None

    # ---- commit and sync --------------------------------------------------------

    def commit(self, everything: bool = False) -> bool:
        """Write what changed in one transaction (the untold tasks too if `everything`, else those
        that waited UNTOLD_WAIT); False (and `trouble` set) if it could not be."""
        self._take_untold(everything)
        if not self._dirty and not self._batches:
            return self.trouble is None
        if self.trouble is not None and time.monotonic() < self._retry_at:
            return False
        try:
            self._write()
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)
            return False
        for task_id in self._dirty:
            del self._history[task_id]
        self._dirty.clear()
        self._ended.clear()
        self._batches.clear()
        self._respec.clear()
        self._replacing.clear()
        self.commits += 1
        files, self._new_files = self._new_files, []
        self.syncer.committed(files)
        if self.trouble is not None:
            log.warning("journal %s: writable again; new tasks are accepted", self.path)
            self.trouble = None
        return True

    def _write(self) -> None:
        """One transaction: a new task's row inserted, a known one's updated (its spec only when it
        changed: a batch task's references resolved at release, or the caller's environment dropped
        once the task cannot run again, rows.spec_blob), the batches that changed."""
        inserts: list[tuple[str, list[tuple[Any, ...]]]] = []   # runs of one statement, in acceptance order (seq)
        updates, respecs, written, env = [], [], [], []
        for task_id, record in self._dirty.items():
            result, file, result_size = self._result(task_id, record)
            spec_size = self._written.get(task_id)
            if spec_size is None or task_id in self._respec or (
                    task_id in self._with_env and not rows.runs_again(record)):
                spec = rows.spec_blob(record)
                if spec_size is not None:
                    respecs.append((spec, task_id))
                spec_size = len(spec)
                env.append((task_id, "caller_env" in record.spec.args and rows.runs_again(record)))
            size = spec_size + result_size
            if task_id in self._written:
                updates.append(rows.update(record, rows.history(self._history[task_id]), result, file, size))
            else:
                sql, params = rows.insert(record, spec, rows.history(self._history[task_id]), result, file, size)
                if inserts and inserts[-1][0] is sql:
                    inserts[-1][1].append(params)
                else:
                    inserts.append((sql, [params]))
            written.append((task_id, spec_size, size if record.ended is not None else None))
        with transaction(self.conn) as conn:
            for sql, params in inserts:   # a statement run for no rows still costs its call
                conn.executemany(sql, params)
            if updates:
                conn.executemany(rows.UPDATE, updates)
            if respecs:
                conn.executemany("UPDATE tasks SET spec = ? WHERE id = ?", respecs)
            if self._batches:
                conn.executemany(BATCH_UPSERT, list(self._batches.values()))
        self.rows_written += len(written)
        for task_id, kept in env:
            if kept:
                self._with_env.add(task_id)
            else:
                self._with_env.discard(task_id)
        for task_id, spec_size, ended_size in written:
            if ended_size is None:
                self._written[task_id] = spec_size
            else:   # its row is final: its bytes count against retention
                self._written.pop(task_id, None)
                self._with_env.discard(task_id)
                self.retention.added(ended_size)

    def _result(self, task_id: str, record: TaskRecord) -> tuple[bytes | None, str | None, int]:
        """(inline result, result file name, bytes) of an ended task; (None, None, 0) for a live one.
        A large result is written to its file here, before the row that names it."""
        wire = self._ended.get(task_id)
        if wire is None:
            return None, None, 0
        if len(wire) <= self.settings.inline_bytes:
            return wire, None, len(wire)
        name = rows.result_file_name(task_id, record.accepted)
        self._write_file(name, wire)
        return None, name, len(wire)

    def _write_file(self, name: str, data: bytes) -> None:
        self.results_dir.mkdir(mode=0o700, exist_ok=True)
        path = self.results_dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self.settings.durability == "sync":
                os.fsync(fd)
                fsync(self.results_dir)   # the file's name too, or a power cut can lose it
            else:
                self._new_files.append(path)
        finally:
            os.close(fd)

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self._retry_at = time.monotonic() + RETRY_EVERY
        reason = getattr(exc, "strerror", None) or str(exc)
        if self.trouble is None:
            log.error("journal %s: cannot write (%s); new tasks are refused, and what was accepted waits in "
                      "memory until it can be written: free space there", self.path, reason)
        self.trouble = f"parad cannot write its journal {self.path} ({reason}); new tasks are refused until it can: " \
                       f"free space on that filesystem (finished tasks go with `paractl gc`), then submit again"

    # ---- reading back after a restart (recovery.py) -------------------------------

    def live_records(self) -> list[TaskRecord]:
        """The tasks that had not ended, in the order they were accepted. One that cannot be
        read back is logged and marked lost in the journal, so that it is not tried again."""
        records, unreadable = [], []
        for values in self.conn.execute(f"SELECT {rows.LIVE_COLUMNS} FROM tasks WHERE ended IS NULL ORDER BY seq"):
            try:
                record = rows.record_of(values)
                records.append(record)
                self._written[values[0]] = len(values[10])   # its row exists: later writes update it
                if "caller_env" in record.spec.args:
                    self._with_env.add(values[0])
            except (codec.ProtocolError, ValueError, TypeError) as exc:
                log.error("journal: task %s cannot be read back (%s); it is dropped", values[0], exc)
                unreadable.append((time.time(), values[0]))
        if unreadable:
            self.conn.executemany("UPDATE tasks SET state = 'lost', ended = ? WHERE id = ?", unreadable)
        return records

    def live_batches(self) -> list[tuple[str, str, dict[str, list[str]], str | None, float]]:
        """(id, on_failure, after, first_failure, accepted) of each batch that had not ended."""
        return [(batch_id, on_failure, json.loads(after), first_failure, accepted) for
                batch_id, on_failure, after, first_failure, accepted in self.conn.execute(
                    "SELECT id, on_failure, after, first_failure, accepted FROM batches WHERE ended IS NULL")]

    def finished_in_batch(self, batch_id: str) -> list[tuple[TaskRecord, m.TaskResult | None]]:
        """The ended tasks of a batch, with their results (what its waiting tasks may refer to)."""
        found = []
        for values in self.conn.execute(f"SELECT {rows.LIVE_COLUMNS}, result, result_file FROM tasks "
                                        f"WHERE batch = ? AND ended IS NOT NULL", (batch_id,)):
            try:
                record = rows.record_of(values[:-2])
                done = self._done(record.spec.id, *values[-2:])
                record.result = codec.decode(done).result if done else None
            except (codec.ProtocolError, ValueError, TypeError) as exc:   # its dependents see it as not succeeded
                log.error("journal: task %s of batch %s cannot be read back (%s)", values[0], batch_id, exc)
                continue
            found.append((record, record.result))
        return found

    def keyed_since(self, since: float) -> list[TaskRecord]:
        """The ended tasks with an idempotency key accepted after `since` (time.time()), with their results."""
        found = []
        for values in self.conn.execute(f"SELECT {rows.LIVE_COLUMNS}, result, result_file FROM tasks WHERE "
                                        f"idem IS NOT NULL AND accepted > ? AND ended IS NOT NULL ORDER BY seq",
                                        (since,)):
            done = self._done(values[0], *values[-2:])
            try:
                record = rows.record_of(values[:-2])
                record.result = codec.decode(done).result if done is not None else None
            except (codec.ProtocolError, ValueError, TypeError, AttributeError) as exc:   # its key is forgotten
                log.error("journal: task %s cannot be read back (%s); its idempotency key is not kept", values[0], exc)
                continue
            if record.result is not None:
                found.append(record)
        return found

    # ---- finished tasks (tasks.TaskStore) -----------------------------------

    def lookup(self, task_id: str) -> dict[str, Any] | None:
        record = self._dirty.get(task_id) or self._untold.get(task_id) or self._quiet.get(task_id)
        if record is not None:
            return {"task": record.summary(), "result": record.result}
        found = self._query("SELECT id, pool, state, attempts, batch, parent, spec, accepted, ended, result, "
                            "result_file FROM tasks WHERE id = ? AND ended IS NOT NULL", task_id)
        if found is None:
            return None
        done = self._done(task_id, found[9], found[10])
        return {"task": rows.summary(found[:9]), "result": codec.decode(done).result if done else None}

    def done_frame(self, task_id: str) -> bytes | None:
        wire = self._ended.get(task_id)
        if wire is not None:
            return wire
        found = self._query("SELECT result, result_file FROM tasks WHERE id = ? AND ended IS NOT NULL", task_id)
        return None if found is None else self._done(task_id, *found)

    def _query(self, sql: str, *args: Any) -> tuple[Any, ...] | None:
        try:
            return self.conn.execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            log.error("journal %s: read failed: %s", self.path, exc)
            return None

    def _done(self, task_id: str, inline: bytes | None, file: str | None) -> bytes | None:
        if inline is not None or file is None:
            return inline
        try:
            return (self.results_dir / file).read_bytes()
        except OSError as exc:
            log.error("journal: the result of task %s is gone from %s (%s)", task_id, self.results_dir, exc.strerror)
            return None

    def prune(self, older_than: float | None) -> dict[str, int]:
        self.commit(everything=True)
        return self.retention.prune(older_than)

    def retained(self) -> dict[str, int]:
        return {"results": self.retention.count, "bytes": self.retention.bytes}

    def retention_hint(self) -> str:
        return (f"finished tasks are kept in the journal for daemon.journal.retain ({self.settings.retain:g}s) "
                f"and up to daemon.journal.max_bytes ({int(self.settings.max_bytes)} bytes), oldest dropped first")

    def start(self) -> None:
        """Start syncing to disk (syncer.py)."""
        self.syncer.start()

    def close(self) -> None:
        """Commit what is left, sync it, close the database."""
        self.commit(everything=True)
        self.syncer.close()
        try:
            self.conn.execute("PRAGMA optimize")
        except sqlite3.Error:
            pass
        self.conn.close()
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def summary(self) -> dict[str, Any]:
        return {"path": str(self.path), "durability": self.settings.durability, "commits": self.commits,
                "rows_written": self.rows_written, "failures": self.failures, "trouble": self.trouble, **self.retained()}
