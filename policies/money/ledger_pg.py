"""The usage ledger in PostgreSQL: every query the ledger makes, in this one module.

Writes: a batch of events is one statement in one transaction. Events are inserted with
`ON CONFLICT DO NOTHING` on their id, and only the rows actually inserted are added to the
daily rollups, so a batch written twice (a reply lost after the commit, a replayed spill
file) is counted once. Rollup rows are upserted in key order, so two replicas writing at
once never deadlock.

Reads never scan events: reports, the status page and budget rebuilds read the rollups
by (team, day); the one read of events is a primary-key lookup of a few ids
(`Snapshot.present`).
Monthly partitions are created ahead of the months they hold and dropped whole by
`prune`. asyncpg is the driver: binary protocol, prepared statements, and arrays sent as
one parameter each.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from policies.money.ledger_schema import LATEST, MIGRATIONS, ROLLUP_COUNTERS
from policies.money.usage_events import UsageEvent

if TYPE_CHECKING:  # the driver itself is imported when the first ledger connects
    import asyncpg

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")
_PARTITION = re.compile(r"^(events|daily)_y(\d{4})m(\d{2})$")
_LOCK = 7_351_201  # advisory lock key: migrations and partition changes run one at a time
GROUPS = ("team", "key", "model", "deployment")  # what a report may group by
_GROUP_COLUMNS = {"team": "team", "key": "key", "model": "served", "deployment": "deployment"}


@functools.cache
def _failures() -> tuple[type[BaseException], ...]:
    """What a statement can fail with when PostgreSQL is down, restarting or slow. The
    driver is imported here, not with the module: a gateway without a ledger never loads
    it (3 MB of a process at rest)."""
    import asyncpg

    return (
        OSError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        TimeoutError,
    )


class LedgerUnavailable(Exception):
    """PostgreSQL could not be reached, or a statement failed."""


class SchemaMismatch(Exception):
    """The database's ledger schema is not the one this gateway writes."""


@dataclass(frozen=True, slots=True)
class Month:
    year: int
    month: int

    @classmethod
    def of(cls, day: date) -> Month:
        return cls(day.year, day.month)

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def start(self) -> date:
        return date(self.year, self.month, 1)

    def index(self) -> int:
        return self.year * 12 + self.month - 1

    def suffix(self) -> str:
        return f"y{self.year:04d}m{self.month:02d}"


def check_schema_name(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(
            f"ledger schema {name!r} must be a lower-case SQL identifier (letters, digits, _)"
        )
    return name


def _counters_sql() -> tuple[str, str]:
    """The rollup counters of a group of inserted events, and the upsert that adds them."""
    billed = {"search_units": 1, "tokens": 2, "request": 3}
    exprs = {
        "events": "count(*)",
        "requests": "count(*) FILTER (WHERE kind IN (1, 8))",
        "replayed": "count(*) FILTER (WHERE kind = 8)",
        "replayed_cost_micros": "sum(cost_micros) FILTER (WHERE kind = 8)",
        "saved_search_units": "sum(saved_units)",
        "rejected_limits": "count(*) FILTER (WHERE kind = 3)",
        "rejected_rate_limit": "count(*) FILTER (WHERE kind = 4)",
        "rejected_budget": "count(*) FILTER (WHERE kind = 5)",
        "truncated": "count(*) FILTER (WHERE kind = 6)",
        "downgraded": "count(*) FILTER (WHERE kind = 7)",
        "billed_free": "count(*) FILTER (WHERE kind IN (1, 8) AND price_kind = 4)",
    }
    columns = {"search_units": "search_units", "tokens": "tokens", "request": "calls"}
    for kind, number in billed.items():
        exprs[f"billed_{kind}"] = (
            f"sum({columns[kind]}) FILTER (WHERE kind IN (1, 8) AND price_kind = {number})"
        )
    select = ", ".join(
        f"coalesce({exprs.get(name, f'sum({name})')}, 0)" for name in ROLLUP_COUNTERS
    )
    update = ", ".join(f"{name} = d.{name} + EXCLUDED.{name}" for name in ROLLUP_COUNTERS)
    return select, update


_EVENT_COLUMNS = (
    "at", "id", "tokens", "cost_micros", "saved_tokens", "saved_cost_micros", "team", "key",
    "asked", "served", "deployment", "documents", "search_units", "cache_hits",
    "cache_misses", "saved_units", "kind", "price_kind", "calls",
)  # fmt: skip
_EVENT_TYPES = (
    "float8", "uuid", "int8", "int8", "int8", "int8", "int4", "int4", "int4", "int4", "int4",
    "int4", "int4", "int4", "int4", "int4", "int2", "int2", "int2",
)  # fmt: skip


def _write_sql(s: str) -> str:
    select, update = _counters_sql()
    arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_EVENT_TYPES))
    names = ", ".join(_EVENT_COLUMNS)
    rest = ", ".join(_EVENT_COLUMNS[1:])
    return f"""
WITH batch AS (SELECT * FROM unnest({arrays}) AS b({names})),
ins AS (
    INSERT INTO {s}.events ({names})
    SELECT to_timestamp(at), {rest} FROM batch
    ON CONFLICT DO NOTHING
    RETURNING *
),
rolled AS (
    INSERT INTO {s}.daily AS d (team, day, key, asked, served, deployment,
        {", ".join(ROLLUP_COUNTERS)})
    SELECT team, (at AT TIME ZONE 'UTC')::date, key, asked, served, deployment, {select}
    FROM ins GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (team, day, key, asked, served, deployment) DO UPDATE SET {update}
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM rolled)
"""


def rollup_select(s: str) -> str:
    """Rollups built in one statement from the events already there (a bulk load)."""
    select, _ = _counters_sql()
    return (
        f"INSERT INTO {s}.daily (team, day, key, asked, served, deployment, "
        f"{', '.join(ROLLUP_COUNTERS)}) SELECT team, (at AT TIME ZONE 'UTC')::date, key, "
        f"asked, served, deployment, {select} FROM {s}.events GROUP BY 1, 2, 3, 4, 5, 6"
    )


class PostgresLedger:
    """One process's connection pool to the ledger and the statements it runs."""

    def __init__(
        self,
        dsn: str,
        schema: str = "rerank_ledger",
        *,
        timeout_s: float = 5.0,
        max_connections: int = 2,
    ) -> None:
        self.dsn = dsn
        self.schema = check_schema_name(schema)
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._pool: asyncpg.Pool | None = None
        self._names: dict[str, int] = {"": 0}
        self._months: set[Month] = set()  # partitions known to exist
        self._write = _write_sql(self.schema)

    # ---------------------------------------------------------------- connection

    async def _connection_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            import asyncpg  # see `_failures`

            with self._failing():
                self._pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=0,
                    max_size=self.max_connections,
                    timeout=self.timeout_s,
                    command_timeout=self.timeout_s,
                    max_inactive_connection_lifetime=60.0,
                )
        return self._pool

    @contextlib.contextmanager
    def _failing(self) -> Iterator[None]:
        """Any failure becomes LedgerUnavailable, and the pool is dropped: a connection cut
        by a restart can be left mid-protocol, and the next call starts afresh."""
        try:
            yield
        except _failures() as exc:
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None
            raise LedgerUnavailable(_describe(exc)) from exc

    async def _run(self, method: str, sql: str, *args: Any) -> Any:
        pool = await self._connection_pool()
        with self._failing():
            return await getattr(pool, method)(sql, *args, timeout=self.timeout_s)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self.timeout_s)
            except _failures():
                pool.terminate()

    # ---------------------------------------------------------------- schema

    async def schema_version(self) -> int:
        """The newest migration applied (0: none)."""
        exists = await self._run(
            "fetchval", "SELECT to_regclass($1) IS NOT NULL", f"{self.schema}.schema_version"
        )
        if not exists:
            return 0
        found = await self._run(
            "fetchval", f"SELECT coalesce(max(version), 0) FROM {self.schema}.schema_version"
        )
        return int(found)

    async def check_schema(self) -> None:
        """Raise SchemaMismatch unless the schema is exactly the one this code writes."""
        version = await self.schema_version()
        if version > LATEST:
            raise SchemaMismatch(
                f"the ledger schema {self.schema!r} is at version {version}, newer than this "
                f"gateway's {LATEST}: run a gateway as new as the one that migrated it"
            )
        if version < LATEST:
            raise SchemaMismatch(
                f"the ledger schema {self.schema!r} is at version {version}, this gateway "
                f"needs {LATEST}: run `rerank-gateway ledger migrate --config FILE`"
            )

    async def migrate(self) -> list[int]:
        """Apply the migrations not yet applied; returns their versions."""
        pool = await self._connection_pool()
        applied: list[int] = []
        with self._failing():
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                current = 0
                if await conn.fetchval(
                    "SELECT to_regclass($1) IS NOT NULL", f"{self.schema}.schema_version"
                ):
                    current = await conn.fetchval(
                        f"SELECT coalesce(max(version), 0) FROM {self.schema}.schema_version"
                    )
                if current > LATEST:
                    raise SchemaMismatch(
                        f"the ledger schema is at version {current}, newer than {LATEST}"
                    )
                for version, sql in MIGRATIONS:
                    if version <= current:
                        continue
                    await conn.execute(sql.format(s=self.schema))
                    await conn.execute(
                        f"INSERT INTO {self.schema}.schema_version (version) VALUES ($1)",
                        version,
                    )
                    applied.append(version)
        self._months.clear()
        return applied

    # ---------------------------------------------------------------- partitions

    async def ensure_months(self, months: Iterable[Month]) -> None:
        """Create the event and rollup partitions of `months` that do not exist yet."""
        missing = sorted({m for m in months} - self._months, key=Month.index)
        if not missing:
            return
        pool = await self._connection_pool()
        s = self.schema
        with self._failing():
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                for month in missing:
                    start, end = month.start(), month.next().start()
                    await conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {s}.events_{month.suffix()} PARTITION OF "
                        f"{s}.events FOR VALUES FROM ('{start} 00:00+00') TO ('{end} 00:00+00')"
                    )
                    await conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {s}.daily_{month.suffix()} PARTITION OF "
                        f"{s}.daily FOR VALUES FROM ('{start}') TO ('{end}')"
                    )
        self._months.update(missing)

    async def partitions(self) -> list[tuple[str, Month]]:
        """(table, month) of every partition, oldest first."""
        rows = await self._run(
            "fetch",
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1",
            self.schema,
        )
        found = []
        for row in rows:
            match = _PARTITION.match(row["relname"])
            if match:
                found.append((match[1], Month(int(match[2]), int(match[3]))))
        return sorted(found, key=lambda p: (p[1].index(), p[0]))

    async def prune(
        self, today: date, event_months: int | None, rollup_months: int | None
    ) -> list[str]:
        """Drop the partitions older than the kept months (the current month counts as one)."""
        keep = {"events": event_months, "daily": rollup_months}
        current = Month.of(today).index()
        dropped = []
        for table, month in await self.partitions():
            months = keep[table]
            if months is not None and month.index() <= current - months:
                name = f"{table}_{month.suffix()}"
                await self._run("execute", f"DROP TABLE IF EXISTS {self.schema}.{name}")
                dropped.append(name)
                self._months.discard(month)
        return dropped

    # ---------------------------------------------------------------- writes

    async def _ids(self, names: Iterable[str]) -> dict[str, int]:
        """Ids of `names`, adding those the ledger does not know yet."""
        missing = sorted({n for n in names if n not in self._names})
        if missing:
            await self._run(
                "execute",
                f"INSERT INTO {self.schema}.names (name) SELECT unnest($1::text[]) "
                "ON CONFLICT (name) DO NOTHING",
                missing,
            )
            rows = await self._run(
                "fetch",
                f"SELECT id, name FROM {self.schema}.names WHERE name = ANY($1::text[])",
                missing,
            )
            self._names.update((row["name"], row["id"]) for row in rows)
        return self._names

    async def write(self, batch: Sequence[tuple[bytes, UsageEvent]]) -> int:
        """Write `batch` (ids and events) in one transaction; returns how many were new."""
        if not batch:
            return 0
        events = [event for _, event in batch]
        days = {datetime.fromtimestamp(e.at, UTC).date() for e in events}
        await self.ensure_months(Month.of(d) for d in days)
        ids = await self._ids(
            name
            for e in events
            for name in (e.team, e.key, e.asked, e.served, e.deployment)
        )
        columns: list[list[Any]] = [[] for _ in _EVENT_COLUMNS]
        for event_id, e in batch:
            row = (
                e.at, uuid.UUID(bytes=event_id), e.tokens, e.cost_micros, e.saved_tokens,
                e.saved_cost_micros, ids[e.team], ids[e.key], ids[e.asked], ids[e.served],
                ids[e.deployment], e.documents, e.search_units, e.cache_hits, e.cache_misses,
                e.saved_units, e.kind, e.price_kind, e.calls,
            )  # fmt: skip
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        row = await self._run("fetchrow", self._write, *columns)
        return int(row[0])

    # ---------------------------------------------------------------- reads

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Snapshot]:
        """One read-only REPEATABLE READ transaction: every read in it sees the same events
        and rollups (a budget rebuild reads a team's spend and which late settlements are
        in it from one snapshot, so it adds the others exactly once)."""
        pool = await self._connection_pool()
        with self._failing():
            async with pool.acquire() as conn, conn.transaction(
                isolation="repeatable_read", readonly=True
            ):
                yield Snapshot(conn, self.schema, self.timeout_s)

    async def rollups(
        self, first: date, last: date, teams: Sequence[str] | None, by: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Counter sums over [first, last] grouped by `by` (names from GROUPS; `model` is the
        model that scored), for `teams` (None: all)."""
        s = self.schema
        dims = [_GROUP_COLUMNS[g] for g in by]
        joins = "".join(f" JOIN {s}.names n_{d} ON n_{d}.id = d.{d}" for d in dims)
        select = ", ".join(f"n_{d}.name AS {g}" for d, g in zip(dims, by, strict=True))
        sums = ", ".join(f"sum(d.{c})::bigint AS {c}" for c in ROLLUP_COUNTERS)
        where = "d.day BETWEEN $1 AND $2"
        args: list[Any] = [first, last]
        if teams is not None:
            joins += f" JOIN {s}.names n_team_filter ON n_team_filter.id = d.team"
            where += " AND n_team_filter.name = ANY($3::text[])"
            args.append(list(teams))
        group = f" GROUP BY {', '.join(f'n_{d}.name' for d in dims)}" if dims else ""
        order = f" ORDER BY {', '.join(by)}" if by else ""
        sql = f"SELECT {select + ', ' if select else ''}{sums} FROM {s}.daily d{joins} " + (
            f"WHERE {where}{group}{order}"
        )
        rows = await self._run("fetch", sql, *args)
        return [dict(row) for row in rows if row["events"]]

    async def daily_cost(self, first: date, last: date) -> dict[str, dict[date, int]]:
        """Cost per team and day over [first, last], micro-dollars (the status page's chart)."""
        s = self.schema
        rows = await self._run(
            "fetch",
            f"SELECT t.name AS team, d.day, sum(d.cost_micros)::bigint AS cost FROM {s}.daily d "
            f"JOIN {s}.names t ON t.id = d.team WHERE d.day BETWEEN $1 AND $2 "
            "GROUP BY t.name, d.day ORDER BY t.name, d.day",
            first,
            last,
        )
        found: dict[str, dict[date, int]] = {}
        for row in rows:
            found.setdefault(row["team"], {})[row["day"]] = int(row["cost"])
        return found

    async def storage(self) -> dict[str, int]:
        """Rows and bytes on disk (tables and indexes) of the events and rollups."""
        s = self.schema
        sizes: dict[str, int] = {"events_bytes": 0, "daily_bytes": 0}
        for table, month in await self.partitions():
            name = f"{s}.{table}_{month.suffix()}"
            sizes[f"{table}_bytes"] += int(
                await self._run("fetchval", "SELECT pg_total_relation_size($1::regclass)", name)
            )
        sizes["events"] = int(await self._run("fetchval", f"SELECT count(*) FROM {s}.events"))
        return sizes


class Snapshot:
    def __init__(self, conn: asyncpg.Connection, schema: str, timeout_s: float) -> None:
        self.conn = conn
        self.schema = schema
        self.timeout_s = timeout_s

    async def spent(self, team: str, first: date, last: date) -> int:
        """What `team` was charged over [first, last], micro-dollars (an index range of the
        rollups, never a scan of events)."""
        s = self.schema
        found = await self.conn.fetchval(
            f"SELECT coalesce(sum(d.cost_micros), 0) FROM {s}.daily d "
            f"JOIN {s}.names t ON t.id = d.team WHERE t.name = $1 AND d.day BETWEEN $2 AND $3",
            team,
            first,
            last,
            timeout=self.timeout_s,
        )
        return int(found)

    async def present(self, ids: Sequence[bytes], first: date, last: date) -> set[bytes]:
        """Which of the event `ids` (stamped within [first, last]) are in the ledger."""
        if not ids:
            return set()
        rows = await self.conn.fetch(
            f"SELECT id FROM {self.schema}.events WHERE id = ANY($1::uuid[]) "
            "AND at >= $2 AND at < $3",
            [uuid.UUID(bytes=i) for i in ids],
            datetime(first.year, first.month, first.day, tzinfo=UTC),
            datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1),
            timeout=self.timeout_s,
        )
        return {row["id"].bytes for row in rows}


def _describe(exc: BaseException) -> str:
    """A short, credential-free description (asyncpg messages never carry the DSN)."""
    return f"{exc.__class__.__name__}: {str(exc)[:200]}" if str(exc) else exc.__class__.__name__
