"""Azure AI Foundry: Cohere Rerank on serverless endpoints and on Foundry resources.

Both speak Cohere's schema, so this is the Cohere provider with Azure's URL forms and
key header. Serverless endpoints (`https://<deployment>.<region>.models.ai.azure.com`)
serve `/v1/rerank` and `/v2/rerank`; Foundry resources serve
`https://<resource>.services.ai.azure.com/providers/cohere/v2/rerank` with `model` set
to the deployment name. Azure bills in `meta.billed_units`, which is passed on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from providers.cohere import CohereOptions, CohereProvider
from providers.http import UpstreamOptions, check_endpoint, check_http_url
from providers.types import UpstreamCall


@dataclass
class AzureOptions(UpstreamOptions):
    base_url: str
    api_key: str | None = None
    auth_header: Literal["authorization", "api-key"] = "authorization"
    path: str | None = None  # explicit path after base_url; default derived from base_url
    endpoint_url: str | None = None  # replaces base_url's scheme and host (private endpoint)
    type: Literal["azure"] = "azure"  # the config's `type` key: selects this options class

    def __post_init__(self) -> None:
        check_endpoint(self.base_url, self.path)
        check_http_url("endpoint_url", self.endpoint_url)
        if self.endpoint_url is not None and urlsplit(self.endpoint_url).path not in ("", "/"):
            raise ValueError(
                "endpoint_url replaces only the scheme and host of base_url; "
                f"put paths in base_url or path (got {self.endpoint_url!r})"
            )


def rerank_url(base_url: str, path: str | None = None) -> str:
    """The rerank URL for a configured base URL (litellm's rules, but v2 by default).

    Kept: a URL ending in /v1/rerank or /v2/rerank. Appended: `/rerank` after /v1 or /v2,
    `/v2/rerank` after anything else (a bare host or a Foundry `/providers/cohere` base).
    """
    base = base_url.rstrip("/")
    if path is not None:
        return base + path
    if base.endswith(("/v1/rerank", "/v2/rerank")):
        return base
    if base.endswith(("/v1", "/v2")):
        return base + "/rerank"
    return base + "/v2/rerank"


class AzureProvider(CohereProvider):
    """The `azure` provider type: Cohere's protocol at an Azure URL with an Azure key."""

    type = "azure"

    def __init__(self, name: str, options: AzureOptions) -> None:
        url = urlsplit(rerank_url(options.base_url, options.path))
        if options.endpoint_url is not None:
            url = url._replace(**_origin(options.endpoint_url))
        bearer = options.auth_header == "authorization"
        super().__init__(
            name,
            CohereOptions(
                base_url=f"{url.scheme}://{url.netloc}",
                path=url.path,
                api_key=options.api_key if bearer else None,
                timeout_s=options.timeout_s,
                max_connections=options.max_connections,
            ),
        )
        if options.api_key and not bearer:
            self.headers["api-key"] = options.api_key
        # A /v1/rerank URL was chosen explicitly: v1 has no max_tokens_per_doc.
        self.v1 = url.path.endswith("/v1/rerank")

    def body(self, call: UpstreamCall) -> dict[str, Any]:
        body = super().body(call)
        body.pop("priority", None)  # not in Azure's documented schema
        if self.v1:
            body.pop("max_tokens_per_doc", None)
        return body


def _origin(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    return {"scheme": parts.scheme, "netloc": parts.netloc}
