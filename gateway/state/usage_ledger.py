"""The usage ledger at run time: buffer events off the request path, write them in batches.

A request only appends its event to this process's buffer (`add`, no I/O). A background
task writes the buffer to PostgreSQL every `ledger.flush_interval_s`, or sooner when a
batch is full; a batch that fails stays buffered and is tried again with back-off, so
PostgreSQL can be slow or down without the gateway noticing more than a growing buffer
(`rerank_ledger_buffered_events`, `rerank_ledger_oldest_event_age_seconds`, and the
`ledger_unreachable` operator event). A full buffer refuses new events, counted in
`rerank_ledger_events_dropped_total` with the `ledger_buffer_full` event: nothing is
lost silently.

At exit (`close`, from SIGTERM's drain) the buffer is written; if PostgreSQL cannot take it,
it goes to a file in `ledger.spill_dir` (replayed at the next start: event ids make a
replay count once) or, without one, is counted as dropped and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson

from gateway.config.model import LedgerConfig
from gateway.observe.events import LEDGER_BUFFER_FULL, LEDGER_SCHEMA, LEDGER_UNREACHABLE, Events
from gateway.observe.logs import log
from gateway.observe.metrics import Metrics
from policies.money.ledger_pg import LedgerUnavailable, Month, PostgresLedger, SchemaMismatch
from policies.money.usage_events import EventBuffer, UsageEvent

Clock = Callable[[], float]
_MAX_BACKOFF_S = 5.0
_START_CHECK_S = 3.0  # the schema check at start; an unreachable ledger does not block it
_MAINTENANCE_S = 3600.0  # partitions ahead, retention
_SPILL_GLOB = "ledger-spill-*.jsonl"
_FIELDS = tuple(f.name for f in dataclasses.fields(UsageEvent))


class UsageLedger:
    def __init__(
        self,
        settings: LedgerConfig,
        metrics: Metrics,
        clock: Clock = time.time,
        store: PostgresLedger | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.store = store or PostgresLedger(
            settings.url, settings.schema, timeout_s=settings.timeout_s
        )
        self.buffer = EventBuffer(settings.max_buffered)
        self.events = Events(metrics)
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._schema_ok = False
        self._down_since: float | None = None
        self._next_maintenance = 0.0
        self._claimed: list[Path] = []  # replayed spill files, deleted once written

    # ---------------------------------------------------------------- the request path

    def new_id(self) -> bytes:
        return self.buffer.new_id()

    def add(self, event: UsageEvent, event_id: bytes | None = None) -> None:
        """Buffer one event (never waits); counted and reported when the buffer is full."""
        if not self.buffer.add(event, event_id):
            self.metrics.ledger_dropped.inc()
            self.events.repeating(
                LEDGER_BUFFER_FULL,
                "buffer",
                max_buffered=self.settings.max_buffered,
                effect="usage events are being dropped (counted) until the ledger catches up",
            )
        elif len(self.buffer) >= self.settings.batch_size:
            self._wake.set()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Check the schema (SchemaMismatch stops the start), replay spill files, and start
        writing. An unreachable ledger is reported and does not stop the start."""
        try:
            await asyncio.wait_for(self.store.check_schema(), _START_CHECK_S)
            self._schema_ok = True
        except (LedgerUnavailable, TimeoutError) as exc:
            self._unreachable(exc)
        self._replay_spills()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self, timeout_s: float = 10.0) -> None:
        """Write what is buffered (within `timeout_s`), spill or count the rest, disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), timeout_s)
        if len(self.buffer):
            self._spill()
        await self.store.close()
        self._gauges()

    async def _run(self) -> None:
        backoff = self.settings.flush_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), backoff)
            self._wake.clear()
            written = await self.flush()
            backoff = (
                self.settings.flush_interval_s
                if written
                else min(_MAX_BACKOFF_S, max(backoff * 2, self.settings.flush_interval_s))
            )
            if written and self.clock() >= self._next_maintenance:
                await self._maintain()

    # ---------------------------------------------------------------- writing

    async def flush(self) -> bool:
        """Write the whole buffer, batch by batch; False when the ledger could not take it
        (what was not written stays buffered)."""
        async with self._writing:
            try:
                if not self._schema_ok:
                    await self.store.check_schema()
                    self._schema_ok = True
                while len(self.buffer):
                    batch = self.buffer.peek(self.settings.batch_size)
                    written = await self.store.write(batch)
                    self.buffer.discard(len(batch))
                    self.metrics.ledger_written.inc(written)
                self._forget_claimed()
            except SchemaMismatch as exc:
                self.events.repeating(LEDGER_SCHEMA, "schema", reason=str(exc))
                return False
            except LedgerUnavailable as exc:
                self.metrics.ledger_write_errors.inc()
                self._unreachable(exc)
                return False
            finally:
                self._gauges()
        if self._down_since is not None:
            log.info(
                "ledger_recovered", down_s=round(self.clock() - self._down_since, 1)
            )
            self._down_since = None
        return True

    async def _maintain(self) -> None:
        """Create this and next month's partitions ahead of need; drop expired months."""
        self._next_maintenance = self.clock() + _MAINTENANCE_S
        today = datetime.fromtimestamp(self.clock(), UTC).date()
        this_month = Month.of(today)
        try:
            await self.store.ensure_months([this_month, this_month.next()])
            dropped = await self.store.prune(
                today, self.settings.event_retention_months, self.settings.rollup_retention_months
            )
        except LedgerUnavailable as exc:
            log.warning("ledger_maintenance_failed", error=str(exc))
            return
        if dropped:
            log.info("ledger_pruned", partitions=dropped)

    def _unreachable(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = self.clock()
        self.events.repeating(
            LEDGER_UNREACHABLE,
            "ledger",
            error=str(exc)[:200] or exc.__class__.__name__,
            buffered=len(self.buffer),
            effect="usage events are held in memory and written when the ledger returns",
        )

    def _gauges(self) -> None:
        self.metrics.ledger_buffered.set(len(self.buffer))
        oldest = self.buffer.oldest_at()
        self.metrics.ledger_oldest_s.set(0 if oldest is None else max(0.0, self.clock() - oldest))

    # ---------------------------------------------------------------- spill files

    def _spill(self) -> None:
        """At exit: the events PostgreSQL could not take, to a file (or counted as dropped)."""
        left = self.buffer.peek(len(self.buffer))
        spill_dir = self.settings.spill_dir
        if spill_dir is None:
            self.metrics.ledger_dropped.inc(len(left))
            log.error(
                "ledger_events_lost",
                operator_event=True,
                events=len(left),
                reason="the ledger was unreachable at exit and ledger.spill_dir is not set",
            )
            return
        path = Path(spill_dir) / f"ledger-spill-{os.getpid()}-{time.time_ns()}.jsonl"
        try:
            Path(spill_dir).mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as out:
                for event_id, event in left:
                    out.write(orjson.dumps([event_id.hex(), *dataclasses.astuple(event)]))
                    out.write(b"\n")
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            self.metrics.ledger_dropped.inc(len(left))
            log.error("ledger_events_lost", operator_event=True, events=len(left), error=str(exc))
            return
        self.buffer.discard(len(left))
        self._forget_claimed()  # what they held is in the new file
        self.metrics.ledger_spilled.inc(len(left))
        log.warning("ledger_events_spilled", events=len(left), path=str(path))

    def _forget_claimed(self) -> None:
        for path in self._claimed:
            path.unlink(missing_ok=True)
        self._claimed.clear()

    def _replay_spills(self) -> None:
        """Take the spill files left by earlier processes, each claimed by one process (a
        rename), and kept until their events are written or spilled again; a claimed file
        whose process died is taken again."""
        spill_dir = self.settings.spill_dir
        if spill_dir is None or not Path(spill_dir).is_dir():
            return
        paths = [*Path(spill_dir).glob(_SPILL_GLOB), *Path(spill_dir).glob("*.claimed-*")]
        for path in sorted(paths):
            if ".claimed-" in path.name and _alive(int(path.name.rsplit("-", 1)[1])):
                continue
            claimed = path.with_name(path.name.split(".", 1)[0] + f".claimed-{os.getpid()}")
            try:
                path.rename(claimed)  # another worker may have claimed it first
            except OSError:
                continue
            kept = self.buffer.restore(_read_spill(claimed))
            self._claimed.append(claimed)
            log.info("ledger_spill_replayed", events=kept, path=str(path))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


def _read_spill(path: Path) -> Iterator[tuple[bytes, UsageEvent]]:
    with open(path, "rb") as lines:
        for line in lines:
            if line.strip():
                event_id, *values = orjson.loads(line)
                yield bytes.fromhex(event_id), UsageEvent(**dict(zip(_FIELDS, values, strict=True)))
