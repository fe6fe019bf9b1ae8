"""One rerank request, in order: authenticate, parse, over-fetch limits, resolve the model,
score, answer.

Each step is a small method with one job; scoring itself is the `Scorer` chain
(see `gateway.chain.job`). A request sampled for shadow scoring of a tiered alias
(`gateway.chain.shadow`) has its answer written out first, then the shadow starts.
The pipeline owns the response headers, the metrics of the request and its one
access-log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import StreamReader, web

from gateway.chain.fallback import degraded
from gateway.chain.job import Facts, Report, Scored, ScoreJob, Scorer
from gateway.chain.order import Entries
from gateway.chain.shadow import ShadowRunner
from gateway.config import Config
from gateway.errors import ApiError, bad_request, client_gone, spans_unsupported
from gateway.http.answers import answer
from gateway.http.auth import Authenticator, Caller
from gateway.http.edge import ACCEPTED_ENCODINGS, CLOSE_CONNECTION, request_id
from gateway.http.wire import RerankRequest, parse_body, render_response
from gateway.observe.logs import access_log
from gateway.observe.metrics import Metrics, child
from gateway.observe.tracing import RequestTrace, Tracing
from gateway.state.catalog import Catalog
from gateway.state.deployments import BUDGET_HEADER, DeploymentState, Resolution
from gateway.state.depth import DepthBook
from gateway.state.overfetch import Overfetch
from gateway.state.usage import Payer
from policies.money.pricing import PriceTable
from policies.quality.depth import Plan, complete
from policies.routing.admission import FairAdmission, Refusal
from providers.types import Span

UNKNOWN = "unknown"
DEPTH_HEADER = "X-Rerank-Depth"


@dataclass(slots=True)
class Outcome:
    """What the access log and metrics record about one request."""

    request_id: str
    team: str = UNKNOWN
    key: str = ""  # the caller's key, as usage records name it
    model: str = UNKNOWN
    documents: int = 0
    status: int = 200
    error: str | None = None
    trace: RequestTrace | None = None


class Pipeline:
    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        auth: Authenticator,
        scorer: Scorer,
        metrics: Metrics,
        deployments: DeploymentState,
        overfetch: Overfetch,
        prices: PriceTable,
        depth: DepthBook,
        shadow: ShadowRunner | None = None,
        tracing: Tracing | None = None,
        entries: Entries | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.auth = auth
        self.scorer = scorer  # the whole chain
        self.entries = entries  # where each job enters it (None: always at the top)
        self.metrics = metrics
        self.deployments = deployments
        self.overfetch = overfetch
        self.prices = prices
        self.depth = depth  # depth advice: measures every answer, cuts in enforce mode
        self.tracing = tracing  # None: tracing off, no span objects at all
        self.shadow = shadow  # shadow scoring of tiered aliases, after the answer
        self.in_flight = 0  # lets a reload close this pipeline's providers once idle
        self._idle: asyncio.Event | None = None  # set when the last request is done
        limit = config.server.max_in_flight
        self.admission = FairAdmission(limit) if limit is not None else None

    async def handle(self, request: web.Request, api_version: int) -> web.StreamResponse:
        started = time.perf_counter()
        outcome = Outcome(request_id=request_id(request))
        trace = self.tracing.start(request) if self.tracing is not None else None
        outcome.trace = trace
        self.metrics.in_flight.inc()
        self.in_flight += 1
        try:
            response = await self._serve(request, api_version, outcome, started)
        except Exception as exc:  # the caller's mistake, an upstream's failure, a gateway bug
            failed = answer(exc, outcome.request_id)
            outcome.status, outcome.error, response = failed.status, failed.logged, failed.response
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()
            if self._idle is not None and not self.in_flight:
                self._idle.set()
        elapsed = time.perf_counter() - started
        if trace is not None:  # the caller can hand the trace id to the platform team
            response.headers["traceparent"] = trace.traceparent
            trace.finish(outcome.status, response.headers, outcome.error)
        self._record(outcome, elapsed, response)
        return response

    async def idle(self, timeout_s: float) -> None:
        """Return once no request is in flight here, or after `timeout_s` (a reload waits
        for this before it closes the old gateway)."""
        if self.in_flight:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout_s)

    def _shed(self, team: str, refusal: Refusal) -> ApiError:
        """At capacity, or the team at its share of it while others wait: 503 at once."""
        self.metrics.shed.inc()
        if refusal.share is None:
            message = (
                f"the gateway is at capacity ({refusal.limit} requests in flight in this "
                "process, server.max_in_flight); retry shortly"
            )
        else:
            message = (
                f"the gateway is at capacity for team '{team}': it has its share "
                f"({refusal.share} of server.max_in_flight {refusal.limit} in this process) "
                "in flight while other requests wait; retry shortly"
            )
        return ApiError(503, message, retry_after_s=1.0)

    async def _serve(
        self, request: web.Request, api_version: int, outcome: Outcome, started: float
    ) -> web.Response:
        caller = self.auth.caller(request.headers.get("Authorization"))
        outcome.team, outcome.key = caller.team, caller.key_label
        self._check_room(outcome.team)  # before the body: shedding stays cheap
        body = await self._read(request, outcome)  # a slow body holds no slot
        with self._slot(outcome.team):
            return await self._score(request, api_version, outcome, started, caller, body)

    def _check_room(self, team: str) -> None:
        if self.admission is not None:
            refusal = self.admission.has_room(team)
            if refusal is not None:
                raise self._shed(team, refusal)

    @contextlib.contextmanager
    def _slot(self, team: str) -> Iterator[None]:
        """Hold one of server.max_in_flight while the request is served."""
        admission = self.admission
        if admission is None:
            yield
            return
        refusal = admission.admit(team)
        if refusal is not None:
            raise self._shed(team, refusal)
        try:
            yield
        finally:
            admission.release(team)

    async def _score(
        self,
        request: web.Request,
        api_version: int,
        outcome: Outcome,
        started: float,
        caller: Caller,
        body: bytes,
    ) -> web.Response:
        parsed = parse_body(body, api_version)
        outcome.documents = len(parsed.texts)
        outcome.model = self.catalog.require(parsed.model, visible=caller.models)
        caller.check_model(outcome.model)  # 403 naming the models the team may use
        if outcome.trace is not None:
            outcome.trace.request(outcome.model, outcome.team, outcome.documents, parsed.top_n)
        payer = Payer(outcome.team, outcome.key, outcome.model)
        enforced = await self.overfetch.apply(payer, outcome.model, parsed.query, parsed.texts)
        if enforced is not None:
            parsed.truncate(enforced.texts, enforced.kept, enforced.warnings)
        depth = self.depth.plan(outcome.team, outcome.model, len(parsed.texts), parsed.top_n)
        texts = parsed.texts if depth.cut is None else parsed.texts[: depth.cut]
        route = self.resolve(request, outcome, parsed.query, texts, started)
        backup = route.backup
        if parsed.relevant_spans is not None:  # only models that can return them
            if not self.catalog.spans_capable(route.model):
                raise spans_unsupported(route.model)
            if backup is not None and not self.catalog.spans_capable(backup.model):
                backup = None
        facts = Facts(
            request_id=outcome.request_id,
            team=outcome.team,
            model=route.model,
            deadline=route.deadline,
            cache_control=_cache_control(request),
            alias=outcome.model if outcome.model in self.catalog.tiers else None,
            backup=backup,
            key=outcome.key,
            asked=outcome.model,
        )
        warnings = [*parsed.warnings, *route.warnings]
        if depth.warning is not None:
            warnings.append(depth.warning)
        job = ScoreJob(
            facts,
            parsed.query,
            texts,
            parsed.max_tokens_per_doc,
            Report(warnings),
            priority=parsed.priority,
            spans=parsed.relevant_spans,
        )
        scorer = self.entries.scorer(facts) if self.entries is not None else self.scorer
        scored = await scorer.score(job)
        scores, order = complete(scored.scores, len(parsed.texts))
        if not degraded(job.report):  # a fallback's order is not the model's verdict
            self.depth.record(
                depth,
                outcome.team,
                outcome.model,
                order,
                parsed.top_n,
                parsed.query,
                parsed.texts,
                parsed.max_tokens_per_doc,
            )
        response = self._answer(parsed, job, scored, scores, order, depth, started)
        shadow = self.shadow.sample(job, scored.scores, parsed.top_n) if self.shadow else None
        if shadow is not None and self.shadow is not None:
            await _send(request, response)  # the caller's answer goes out first
            self.shadow.start(shadow)
        return response

    async def _read(self, request: web.Request, outcome: Outcome) -> bytes:
        """The body, within the team's max_body_bytes (checked after auth, before parsing)."""
        team = outcome.team
        try:
            return await _read_body(request, self.overfetch.body_limit(team), team)
        except ApiError as exc:
            if exc.status == 413:
                await self.overfetch.body_rejected(Payer(team, outcome.key))
            raise

    def resolve(
        self,
        request: web.Request,
        outcome: Outcome,
        query: str,
        texts: list[str],
        started: float,
    ) -> Resolution:
        """The concrete model and deadline; a tiered alias picks its tier from the budget."""
        return self.deployments.resolve(
            outcome.model,
            outcome.team,
            request.headers.get(BUDGET_HEADER),
            query,
            texts,
            time.perf_counter() - started,
        )

    def _answer(
        self,
        parsed: RerankRequest,
        job: ScoreJob,
        scored: Scored,
        scores: list[float],
        order: list[int],
        depth: Plan,
        started: float,
    ) -> web.Response:
        """`scores` and `order`: of every document the caller sent (`scored` may be of
        only the first ones, in depth enforce mode)."""
        facts, report = job.facts, job.report
        billed = self.prices.billed_units(
            report.model or facts.model, report.deployment, scored.usage
        )
        body = render_response(
            parsed,
            facts.request_id,
            scores,
            billed,
            report.warnings,
            spans=_every_document(scored.spans, len(scores)),
            upstream=report.upstream,
            order=order,
        )
        total_ms = (time.perf_counter() - started) * 1000.0
        upstream_ms = report.upstream_s * 1000.0
        model = report.model or facts.model
        headers = {
            "X-Request-Id": facts.request_id,
            "X-Rerank-Model": model,
            "Server-Timing": f"gateway;dur={max(0.0, total_ms - upstream_ms):.2f}, "
            f"upstream;dur={upstream_ms:.2f}",
        }
        # What the scores mean: the scale of the deployment that answered (a fallback's
        # own), else the model's (a full cache hit: entries of this model's versions).
        scale = (
            self.catalog.deployment_scale(report.deployment)
            if report.deployment
            else self.catalog.score_scale(model)
        )
        if scale is not None:
            headers["X-Rerank-Score-Scale"] = scale
        if report.deployment:
            headers["X-Rerank-Deployment"] = report.deployment
        if report.cache_status:
            headers["X-Cache"] = report.cache_status
        if depth.header is not None:
            headers[DEPTH_HEADER] = depth.header
        return web.Response(body=body, content_type="application/json", headers=headers)

    def _record(self, outcome: Outcome, elapsed: float, response: web.StreamResponse) -> None:
        model = outcome.model if self.catalog.knows(outcome.model) else UNKNOWN
        child(self.metrics.requests, outcome.team, model, str(outcome.status)).inc()
        child(self.metrics.request_duration, model).observe(elapsed)
        if outcome.documents:
            self.metrics.documents.observe(outcome.documents)
        access_log.info(
            "rerank",
            request_id=outcome.request_id,
            team=outcome.team,
            model=model,
            served_by=response.headers.get("X-Rerank-Model"),
            deployment=response.headers.get("X-Rerank-Deployment"),
            cache=response.headers.get("X-Cache"),
            documents=outcome.documents,
            status=outcome.status,
            latency_ms=round(elapsed * 1000.0, 2),
            error=outcome.error,
            **({"trace_id": outcome.trace.trace_id} if outcome.trace is not None else {}),
        )


def _every_document(
    spans: list[tuple[Span, ...]] | None, documents: int
) -> list[tuple[Span, ...]] | None:
    """Relevant spans of every document: none for those beyond an enforced depth."""
    if spans is None or len(spans) >= documents:
        return spans
    return spans + [()] * (documents - len(spans))


async def _send(request: web.Request, response: web.Response) -> None:
    """Write the answer out now (aiohttp then sees it sent and sends nothing more)."""
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:  # the caller went away: nothing to deliver
        pass


async def _read_body(request: web.Request, limit: int, team: str) -> bytes:
    _check_encoding(request)
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit, team)
    try:
        body = await _read_within(request.content, limit)
    except _TooLarge:
        raise _too_large(limit, team) from None
    except ConnectionError:  # the caller closed the connection mid-body
        raise client_gone() from None
    except web.RequestPayloadError as exc:  # a body aiohttp cannot decode (encoding, framing)
        # The parser stopped inside the body, so the connection cannot carry another
        # request: the 400 says `Connection: close`, and the body counts as ended so that
        # aiohttp does not read on into the error (which dropped the connection without
        # a word and logged "Unhandled exception").
        request[CLOSE_CONNECTION] = True
        request.content.feed_eof()
        raise _unreadable(exc) from None
    return body


class _TooLarge(Exception):
    pass


async def _read_within(content: StreamReader, limit: int) -> bytes:
    """The whole body, refused as soon as it passes `limit` bytes (a chunked body has no
    Content-Length to check first). What `request.read()` does, without its two copies
    (a bytearray grown chunk by chunk, then turned into bytes): a body that arrived in one
    read is the parser's own chunk, handed on as it is."""
    content.set_read_chunk_size(limit)  # as request.read(): large inflated chunks
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.readany():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int, team: str) -> ApiError:
    return ApiError(
        413,
        f"request body too large: the limit is {limit} bytes (max_body_bytes for team "
        f"'{team}'); send fewer or shorter documents",
    )


def _check_encoding(request: web.Request) -> None:
    """415 for a Content-Encoding aiohttp does not decode (it would pass the bytes on as
    they are, and the caller would get a puzzling "not valid JSON")."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding and encoding not in ACCEPTED_ENCODINGS:
        raise ApiError(
            415,
            f"unsupported Content-Encoding {encoding[:40]!r}: send the body uncompressed or "
            f"with one of {', '.join(ACCEPTED_ENCODINGS)}",
            log_message="unsupported Content-Encoding",  # a header value: not for the log
        )


def _unreadable(exc: web.RequestPayloadError) -> ApiError:
    # The cause is aiohttp's parser error; its `message` names the problem, never the body.
    reason = getattr(exc.__cause__, "message", None) or "malformed body"
    return bad_request(
        f"the request body could not be read ({reason}); send JSON, uncompressed or with "
        "a valid Content-Encoding"
    )


def _cache_control(request: web.Request) -> frozenset[str]:
    value = request.headers.get("Cache-Control")
    if not value:
        return frozenset()
    return frozenset(part.strip().lower() for part in value.split(",") if part.strip())
