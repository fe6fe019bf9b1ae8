"""Credentials that are loaded off the event loop and looked for again after a failure.

Cloud credential chains may block on the network (instance metadata, STS, OCI's auth
service) or on files, so loading runs in a worker thread: first at provider start, then,
while nothing could be loaded, at most every `RETRY_S` when a request needs it. Until
then each request fails with an AUTH error, which the gateway logs as a configuration
problem; the gateway itself keeps serving its other deployments.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from providers.types import AUTH, ProviderError

T = TypeVar("T")
RETRY_S = 30.0


class LazyCredential(Generic[T]):
    def __init__(
        self,
        label: str,
        what: str,
        load: Callable[[], T | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label  # the provider's name
        self.what = what  # e.g. "AWS credentials", for messages
        self._load_fn = load
        self._clock = clock
        self._value: T | None = None
        self._problem = f"{what} were not loaded yet"
        self._next = 0.0

    async def start(self) -> None:
        await self._load()

    async def get(self) -> T:
        if self._value is None and self._clock() >= self._next:
            await self._load()
        if self._value is None:
            raise auth_error(self.label, self._problem)
        return self._value

    async def _load(self) -> None:
        self._next = self._clock() + RETRY_S
        try:
            self._value = await asyncio.to_thread(self._load_fn)
        except Exception as exc:  # whatever the chain raises means "not available"
            # Only the class name: messages can carry paths or a helper process's output.
            self._problem = f"loading {self.what} failed ({exc.__class__.__name__})"
            return
        if self._value is None:
            self._problem = f"no {self.what} found"


def auth_error(label: str, problem: str) -> ProviderError:
    return ProviderError(f"{label}: {problem}", kind=AUTH, retryable=False)
