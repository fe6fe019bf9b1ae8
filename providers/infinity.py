"""Infinity (michaelfeil/infinity) serving a reranker: `POST {prefix}/rerank`.

Cohere-like body and answer (`document`, when echoed, is a plain string; we never ask
for it). Its own errors use `{"error": {"message", ...}}`, request validation FastAPI's
422 `{"detail": [...]}`; both are read. At most `INFINITY_MAX_CLIENT_BATCH_SIZE`
documents per request (2048 by default), so larger calls are split. Usage in tokens.
A model that is not deployed there is a 400 from Infinity; it is treated as the
unknown model it is (like a 404: this deployment's configuration, failed over).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Ge

from providers.http import HttpResponse, UpstreamOptions, check_endpoint, status_error
from providers.rerank_http import RerankHttpProvider
from providers.types import ProviderError, UpstreamCall


@dataclass
class InfinityOptions(UpstreamOptions):
    base_url: str
    api_key: str | None = None  # Infinity's optional --api-key
    path: str = "/rerank"  # with INFINITY_URL_PREFIX, put the prefix in front
    max_batch_size: Annotated[int, Ge(1)] = 2048
    type: Literal["infinity"] = "infinity"  # the config's `type` key: selects this options class

    def __post_init__(self) -> None:
        check_endpoint(self.base_url, self.path)


class InfinityProvider(RerankHttpProvider):
    """The `infinity` provider type."""

    type = "infinity"
    usage_keys = ("prompt_tokens", "total_tokens")

    def body(self, call: UpstreamCall, documents: Sequence[str]) -> dict[str, Any]:
        return {"model": call.model, "query": call.query, "documents": list(documents)}

    def error(self, resp: HttpResponse) -> ProviderError:
        err = status_error(self.name, resp)
        if resp.status == 400 and "not deployed" in err.message:
            err.status = 404  # our deployment names a model this server does not have
        return err
