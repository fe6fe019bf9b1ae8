"""Google service-account OAuth: the key file, and the signed JWT grant traded for a token.

A service-account key (the JSON file `gcloud iam service-accounts keys create` writes)
holds `client_email`, `private_key` (PEM), `private_key_id` and `token_uri`. The grant is
an RS256 JWT (`kid` = the key id; `iss` = the account, `scope`, `aud` = the token
endpoint, `iat`, `exp` one hour later) POSTed as
`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<jwt>`; the answer is
an access token for about an hour (providers/oauth.py keeps it). Signing needs
`cryptography`, the `vertex` extra; it is written here by hand because the whole JWT is
three base64url parts and one signature, not worth google-auth's dependency tree.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
LIFETIME_S = 3600  # the longest a grant may ask for


@dataclass(frozen=True)
class ServiceAccount:
    email: str
    key_id: str
    key: rsa.RSAPrivateKey
    token_uri: str


def load_service_account(content: str | None, path: str | None) -> ServiceAccount:
    """The account from JSON `content`, else the file at `path`, else the file
    `GOOGLE_APPLICATION_CREDENTIALS` names. ValueError says what is wrong (never the key)."""
    if content is None:
        path = path or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        if not path:
            raise ValueError(
                "no service-account key: set credentials_file, credentials_json or "
                "GOOGLE_APPLICATION_CREDENTIALS"
            )
        content = Path(path).read_text()
    try:
        info = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise ValueError("the service-account key is not JSON") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ValueError('the key is not a service-account key ("type": "service_account")')
    missing = [k for k in ("client_email", "private_key", "private_key_id") if not info.get(k)]
    if missing:
        raise ValueError(f"the service-account key lacks {', '.join(missing)}")
    try:
        key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("the service-account key's private_key is not a PEM RSA key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the service-account key's private_key is not an RSA key")
    return ServiceAccount(
        email=info["client_email"],
        key_id=info["private_key_id"],
        key=key,
        token_uri=info.get("token_uri") or GOOGLE_TOKEN_URI,
    )


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def signed_grant(
    account: ServiceAccount,
    audience: str,
    scope: str = CLOUD_PLATFORM,
    now: Callable[[], float] = time.time,
) -> bytes:
    """The form body of a JWT-bearer grant for `account`, signed now."""
    issued = int(now())
    header = {"alg": "RS256", "typ": "JWT", "kid": account.key_id}
    claims = {
        "iss": account.email,
        "scope": scope,
        "aud": audience,
        "iat": issued,
        "exp": issued + LIFETIME_S,
    }
    signing_input = _b64(orjson.dumps(header)) + b"." + _b64(orjson.dumps(claims))
    signature = account.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    assertion = (signing_input + b"." + _b64(signature)).decode()
    return urlencode({"grant_type": JWT_BEARER, "assertion": assertion}).encode()
