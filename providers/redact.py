"""Credentials scrubbed out of upstream text before anyone else reads it.

An upstream's error message is its own text: one that echoes the request it got (a proxy,
a debugging server, AWS's signature errors) can quote the very credentials the gateway
sent it. Callers see part of that text (`gateway.errors.from_provider_error`), so it goes
through `redact` first: the exact values the gateway sent in credential headers, then
anything that looks like a credential whoever sent it (an `Authorization` or API key
header, a Bearer token, an AWS access key id, a signature, the gateway's own `rg_`/`rgk_`
keys), and finally a bound on the length. Redacting before cutting matters: a cut could
otherwise keep the start of a secret that the exact match no longer finds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

REDACTED = "[redacted]"
MAX_TEXT = 300  # characters of upstream text worth passing on

# Request headers whose values are credentials (lower case), and words in a header name
# that mark one; their values are what an echo would quote.
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-amz-security-token", "opc-obo-token"}
)
_SECRET_WORDS = ("key", "token", "secret", "signature", "auth", "password", "credential")
_MIN_SECRET = 8  # shorter values are not worth hunting for (and would match by chance)
_MIN_PART = 16  # pieces of a composite header value (SigV4, OCI) matched on their own

# A name that says "credential", its separator (`: `, `=`, `": "`), then its value up to
# a quote or the end of the line: header lines, JSON, query strings, Python reprs alike.
_NAMED = re.compile(
    r"""(?ix)
    (\b(?:proxy-)?authorization|\b[\w-]*api[-_]?key|\bx-amz-[\w-]*
      |\b[\w-]*(?:secret|token|password|passwd|signature|credential)|\bkeyid|\bcookie)
    (["']?\s*[:=]\s*["']?)
    ([^"'\r\n]+)
    """
)
_LOOSE = re.compile(
    r"""(?x)
    \b(?:[Bb]earer|BEARER|[Bb]asic)\s+[\w.~+/=-]{6,}   # a token after its scheme
    | \b(?:AKIA|ASIA|AIDA|AROA|AKID)[A-Z0-9]{12,}\b    # AWS access key ids
    | \brgk?_[\w-]{12,}                                # the gateway's own key forms
    | \beyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]*                # a JWT
    | \b(?:sk|pa|jina|nvapi)[-_][\w-]{16,}             # hosted rerankers' key forms
    | \b[0-9a-f]{64}\b                                 # a hex SHA-256 (SigV4 signatures)
    """
)


def secret_values(headers: Mapping[str, str]) -> list[str]:
    """The credential values among request headers, and the pieces of composite ones
    (SigV4's `Credential=…, Signature=…`, OCI's `keyId="…",signature="…"`)."""
    found: list[str] = []
    for name, value in headers.items():
        lower = name.lower()
        if lower not in _SECRET_HEADERS and not any(w in lower for w in _SECRET_WORDS):
            continue
        if len(value) >= _MIN_SECRET:
            found.append(value)
        for part in re.split(r"[\s,;\"]+", value):
            piece = part.split("=", 1)[-1]
            for candidate in (part, piece):
                if len(candidate) >= _MIN_PART:
                    found.append(candidate)
    return found


def redact(text: str, secrets: Iterable[str] = (), limit: int = MAX_TEXT) -> str:
    """`text` without the `secrets` given or anything that looks like a credential, cut
    to `limit` characters."""
    # Longest first, so a value is replaced whole before a piece of it is looked for.
    for secret in sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _NAMED.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _LOOSE.sub(REDACTED, text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
