"""vLLM's rerank endpoint (`POST /v1/rerank`, Cohere/Jina shape) for a cross-encoder.

vLLM's `--api-key` guards only the `/v1`, `/v2`, `/inference` and `/cohere` prefixes:
plain `/rerank` answers without a key. So the path must be a `/v1/rerank` or
`/v2/rerank` one, and the key (when set) goes with it. vLLM echoes every document in
its answer whether asked or not; the decoder skips them (see providers/answers.py).
Usage: `usage.prompt_tokens`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Ge

from providers.http import UpstreamOptions, check_endpoint
from providers.rerank_http import RerankHttpProvider
from providers.types import UpstreamCall

GUARDED_PATHS = ("/v1/rerank", "/v2/rerank")


@dataclass
class VllmOptions(UpstreamOptions):
    base_url: str
    api_key: str | None = None  # vLLM's --api-key / VLLM_API_KEY
    path: str = "/v1/rerank"
    # vLLM batches internally and takes any number of documents: no split by default.
    max_batch_size: Annotated[int, Ge(1)] | None = None
    # Send the caller's `priority` (lower first, as Cohere's): only for a server started
    # with `--scheduling-policy priority`, since vLLM refuses a non-zero one otherwise.
    forward_priority: bool = False
    type: Literal["vllm"] = "vllm"  # the config's `type` key: selects this options class

    def __post_init__(self) -> None:
        check_endpoint(self.base_url, self.path)
        if not self.path.rstrip("/").endswith(GUARDED_PATHS):
            raise ValueError(
                f"path must end in /v1/rerank or /v2/rerank (got {self.path!r}): vLLM's "
                "--api-key does not guard its plain /rerank route"
            )


class VllmProvider(RerankHttpProvider):
    """The `vllm` provider type."""

    type = "vllm"
    usage_keys = ("prompt_tokens", "total_tokens")
    options: VllmOptions

    def body(self, call: UpstreamCall, documents: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": call.model,
            "query": call.query,
            "documents": list(documents),
        }
        if call.max_tokens_per_doc is not None:
            body["max_tokens_per_doc"] = call.max_tokens_per_doc
        if call.priority is not None and self.options.forward_priority:
            body["priority"] = call.priority
        return body
