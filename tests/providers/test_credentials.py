"""LazyCredential: loaded off the loop, looked for again after a failure at most every 30 s."""

from __future__ import annotations

import threading

import pytest

from providers.credentials import RETRY_S, LazyCredential
from providers.types import AUTH, ProviderError


class Source:
    def __init__(self, results: list[object]) -> None:
        self.results = results
        self.calls = 0
        self.threads: list[str] = []

    def __call__(self) -> object:
        self.calls += 1
        self.threads.append(threading.current_thread().name)
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


async def test_missing_credentials_are_retried_no_more_than_every_retry_period() -> None:
    now = [1000.0]
    source = Source([None, RuntimeError("metadata service down: secret=abc"), "signer"])
    cred: LazyCredential[object] = LazyCredential(
        "oci-ord", "OCI credentials", source, clock=lambda: now[0]
    )
    await cred.start()
    with pytest.raises(ProviderError) as info:
        await cred.get()
    assert (info.value.kind, info.value.retryable) == (AUTH, False)
    assert info.value.message == "oci-ord: no OCI credentials found"
    now[0] += RETRY_S - 1
    with pytest.raises(ProviderError):
        await cred.get()
    assert source.calls == 1  # too early to look again
    now[0] += 1
    with pytest.raises(ProviderError) as info:
        await cred.get()
    # Only the exception's class: its text may carry what must not reach a caller.
    assert info.value.message == "oci-ord: loading OCI credentials failed (RuntimeError)"
    now[0] += RETRY_S
    assert await cred.get() == "signer"
    assert await cred.get() == "signer"
    assert source.calls == 3
    assert threading.main_thread().name not in source.threads  # never on the event loop's thread
