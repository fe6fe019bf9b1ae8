"""What is known about a model as one provider serves it: its score scale, whether it
scores listwise, whether it returns Rerank 5's relevant spans, its context length.

These are facts the providers document, kept in one table so that a reader can check
them against the sources (docs/providers.md lists them) and so that the config can
override each one where a deployment differs (`score_scale`, `relevant_spans` on a
deployment; `scoring`, `context_length` on a model). What no source states is left
unknown (None) rather than guessed:

- Cohere's models, on any cloud, answer relevance scores "normalised to [0, 1]":
  `calibrated`. Relevant spans are documented for Rerank v5 and newer on Cohere's own
  API only; which clouds return them is not settled, so elsewhere they are off unless
  a deployment says otherwise. Context: 4,096 tokens for v3.x, 32,768 for v4.
- TEI answers the sigmoid of the cross-encoder's logit unless asked for raw scores
  (the gateway never asks): `sigmoid`. NIM answers raw logits, which its provider maps
  through a sigmoid unless configured with `score: logit`.
- Jina's v3 rerankers (jina-reranker-v3, -v3.5) are listwise: one forward pass over the
  query and all candidates, so a document's score depends on the others. Context
  131,072 tokens (Jina's model pages).
- The offline BM25 ranker takes its IDF from the call's own documents: listwise too.
- Other provider types may state a `score_scale` of their own (Azure's semantic reranker,
  Vertex AI and Pinecone: `calibrated`; llama.cpp and the in-process ONNX model: `sigmoid`
  or `logit` by their `score` option).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from policies.model_version import cohere_version
from providers.types import BM25, CALIBRATED, LOGIT, SIGMOID, Provider

COHERE_API_HOSTS = frozenset({"api.cohere.com", "api.cohere.ai"})
_COHERE_CLOUDS = frozenset({"cohere", "azure", "bedrock", "oci"})
_JINA_LISTWISE = re.compile(r"^jina-reranker-v3(\.\d+)?$")
_JINA_V3_CONTEXT = 131_072
_COHERE_CONTEXT = {3: 4_096, 4: 32_768}
_MAJOR = re.compile(r"v(\d+)\.")


@dataclass(frozen=True, slots=True)
class ModelFacts:
    score_scale: str | None = None  # one of providers.types.SCORE_SCALES; None: unknown
    listwise: bool = False
    relevant_spans: bool = False
    context_length: int | None = None  # tokens; None: unknown


def known_facts(provider: Provider, upstream_model: str) -> ModelFacts:
    """The documented facts of `upstream_model` as `provider` serves it."""
    kind = provider.type
    if kind in _COHERE_CLOUDS and (version := cohere_version(upstream_model)) is not None:
        major = _major(version)
        return ModelFacts(
            score_scale=CALIBRATED,
            relevant_spans=kind == "cohere" and major >= 5 and _on_cohere_api(provider),
            context_length=_COHERE_CONTEXT.get(major),
        )
    if kind == "tei":
        return ModelFacts(score_scale=SIGMOID)
    if kind == "nim":
        logit = getattr(getattr(provider, "options", None), "score", None) == "logit"
        return ModelFacts(score_scale=LOGIT if logit else SIGMOID)
    if kind == "jina" and _JINA_LISTWISE.match(upstream_model):
        return ModelFacts(listwise=True, context_length=_JINA_V3_CONTEXT)
    if provider.batch_relative:  # the offline BM25 ranker
        return ModelFacts(score_scale=BM25, listwise=True)
    # The newer provider types state their scale themselves (docs/providers.md lists them).
    return ModelFacts(score_scale=getattr(provider, "score_scale", None))


def _major(version: str) -> int:
    match = _MAJOR.search(version)
    return int(match.group(1)) if match else 0


def _on_cohere_api(provider: Provider) -> bool:
    base_url = getattr(getattr(provider, "options", None), "base_url", "")
    return (urlsplit(base_url).hostname or "") in COHERE_API_HOSTS
