"""AWS credentials from botocore's standard chain, and SigV4 signatures over exact bytes.

The chain is botocore's own (environment, shared config/credentials files and profiles,
SSO, credential_process, web identity / IRSA, container and instance roles), so the
gateway authenticates as the AWS CLI would on the same host. Resolving or refreshing
credentials can block on the network, so it runs in a worker thread; signing itself is
a few HMACs and stays on the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials, RefreshableCredentials

from providers.credentials import LazyCredential, auth_error


class AwsSigner:
    """Signs requests for one service and region with the chain's current credentials."""

    def __init__(self, label: str, region: str, service: str, profile: str | None = None) -> None:
        self.label = label
        self.region = region
        self.service = service
        session = botocore.session.Session(profile=profile)
        self._credentials: LazyCredential[Any] = LazyCredential(
            label, "AWS credentials", session.get_credentials
        )

    async def start(self) -> None:
        await self._credentials.start()

    async def credentials(self) -> ReadOnlyCredentials:
        """A consistent (key, secret, token) triple, refreshed before it expires."""
        creds = await self._credentials.get()
        try:
            if isinstance(creds, RefreshableCredentials) and creds.refresh_needed():
                return await asyncio.to_thread(creds.get_frozen_credentials)
            frozen: ReadOnlyCredentials = creds.get_frozen_credentials()
            return frozen
        except Exception as exc:
            problem = f"refreshing AWS credentials failed ({exc.__class__.__name__})"
            raise auth_error(self.label, problem) from exc

    async def sign(self, url: str, body: bytes, headers: Mapping[str, str]) -> dict[str, str]:
        """The headers to send with `body` to `url`, exactly as it goes on the wire."""
        request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
        SigV4Auth(await self.credentials(), self.service, self.region).add_auth(request)
        return dict(request.headers.items())
