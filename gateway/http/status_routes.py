"""The status page's routes: the page (or the sign-in form), its data as JSON, sign-in and
sign-out. What the page shows and how it is drawn is `gateway.http.status`; the sessions
are `gateway.state.admin_sessions`.

The page answers in HTML, so a refused sign-in is the form again with the reason (and
`Retry-After` when the sign-in limit says to wait), not Cohere's JSON error.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway.errors import ApiError, wait_headers
from gateway.http import status
from gateway.http.admin_types import SignInForm, StatusReport
from gateway.http.runtime import RUNTIME, current

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


async def page(request: web.Request) -> web.Response:
    """`GET /admin/status`: the page when signed in, else the sign-in form."""
    if current(request).config.auth.admin_key_sha256 is None:
        raise ApiError(403, "admin routes are disabled: set auth.admin_key_sha256")
    if not await _is_admin(request):
        return _html(status.login_page())
    return _html(status.render(await _data(request)))


async def data(request: web.Request) -> web.Response:
    """`GET /admin/status.json` (behind the admin key): what the page shows."""
    found = await _data(request)
    return web.Response(body=orjson.dumps(found), content_type="application/json")


async def sign_in(request: web.Request) -> web.StreamResponse:
    """The sign-in form's POST: a good key opens a session, whose random token becomes an
    HTTP-only, same-site cookie (Secure unless this is plain HTTP on loopback)."""
    form = await request.post()
    key = form.get("key")
    fields: SignInForm = {"key": key} if isinstance(key, str) else {}  # other fields: ignored
    address = request.remote or "unknown"
    try:
        token = await current(request).sign_in.sign_in(fields.get("key"), address)
    except ApiError as exc:
        return _refused(exc)
    response = _see_status()
    response.set_cookie(
        status.COOKIE,
        token,
        path="/admin/",
        httponly=True,
        samesite="Strict",
        secure=status.cookie_secure(request),
    )
    return response


async def sign_out(request: web.Request) -> web.StreamResponse:
    """Ends the session everywhere (the store forgets it), then the browser's copy."""
    address = request.remote or "unknown"
    try:
        await current(request).sign_in.sign_out(request.cookies.get(status.COOKIE), address)
    except ApiError as exc:
        return _refused(exc)
    response = _see_status()
    response.del_cookie(status.COOKIE, path="/admin/")
    return response


async def _is_admin(request: web.Request) -> bool:
    """The admin key in the header (scripts), or a live session of the sign-in form."""
    gateway = current(request)
    header = request.headers.get("Authorization")
    if header is None:
        return await gateway.sign_in.signed_in(request.cookies.get(status.COOKIE))
    try:
        gateway.auth.check_admin(header)
    except ApiError:
        return False
    return True


async def _data(request: web.Request) -> StatusReport:
    runtime = request.app[RUNTIME]
    gateway = runtime.gateway
    return await status.collect(
        gateway.config,
        gateway.deployments,
        gateway.reports,
        runtime.metrics,
        gateway.redis,
        runtime.started_at,
        runtime.draining,
        gateway.shadow.report() if gateway.shadow is not None else None,
        depth=(gateway.depth, gateway.depth_teams()),
    )


def _refused(error: ApiError) -> web.Response:
    """The sign-in form again, saying why (the page's way of answering an `ApiError`)."""
    page = _html(status.login_page(error.message), error.status)
    page.headers.update(wait_headers(error))
    return page


def _html(text: str, status_code: int = 200) -> web.Response:
    return web.Response(
        text=text, status=status_code, content_type="text/html", headers=PAGE_HEADERS
    )


def _see_status() -> web.Response:
    return web.Response(status=303, headers={**PAGE_HEADERS, "Location": "/admin/status"})
