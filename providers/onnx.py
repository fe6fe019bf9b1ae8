"""An in-process cross-encoder: a Hugging Face reranker exported to ONNX, scored by
onnxruntime on the gateway's own CPUs (the `onnx` extra: onnxruntime, tokenizers, numpy).

It gives a fully offline deployment, or a fail-open fallback, cross-encoder quality
instead of BM25. The model directory is what `optimum-cli export onnx --task
text-classification` writes: `model.onnx` (inputs `input_ids`, `attention_mask` and, for
BERT-style models, `token_type_ids`; output `logits` of shape [batch, 1]) and
`tokenizer.json`. Both are loaded at start in a worker thread, and a directory without a
usable model or tokenizer refuses the start with a message naming the file and what is
wrong (ProviderStartError).

Scoring never runs on the event loop: each call goes to a small thread pool (`workers`
threads, so at most that many model runs at once), in batches of `batch_size` pairs, and
each run uses at most `intra_op_threads` cores; spinning threads are off, so an idle
model costs no CPU. A call whose deadline passes stops between batches. With
`score: sigmoid` (the default, as sentence-transformers' CrossEncoder does for one
label) the logit becomes a 0..1 relevance score; `score: logit` passes it on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from providers.extra_options import OnnxOptions
from providers.nim import sigmoid
from providers.types import (
    LOGIT,
    SIGMOID,
    STATUS,
    TIMEOUT,
    ProviderError,
    ProviderStartError,
    UpstreamCall,
    UpstreamResult,
)

REQUIRED_INPUTS = ("input_ids", "attention_mask")
KNOWN_INPUTS = frozenset({*REQUIRED_INPUTS, "token_type_ids"})
PAD_TOKENS = ("[PAD]", "<pad>")


@dataclass(frozen=True)
class CrossEncoder:
    """A loaded model and tokenizer: scores (query, document) pairs, on any thread."""

    session: ort.InferenceSession
    tokenizer: Tokenizer
    inputs: tuple[str, ...]  # the inputs the graph declares, fed in this order
    output: str
    pad_id: int

    def logits(self, query: str, documents: Sequence[str]) -> tuple[list[float], int]:
        """One model run over the pairs: their logits and the tokens they took."""
        # One pair at a time: encode_batch would start a thread per core of its own.
        encoded = [self.tokenizer.encode(query, doc) for doc in documents]
        width = max(len(e.ids) for e in encoded)
        ids = np.full((len(encoded), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encoded), width), dtype=np.int64)
        types = np.zeros((len(encoded), width), dtype=np.int64)
        for row, e in enumerate(encoded):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = e.attention_mask
            types[row, : len(e.ids)] = e.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        (out,) = self.session.run([self.output], {name: feeds[name] for name in self.inputs})
        logits = np.asarray(out).reshape(len(documents), -1)[:, 0]
        return [float(x) for x in logits], int(mask.sum())


def load(options: OnnxOptions) -> CrossEncoder:
    """Load and check the model and tokenizer, or ProviderStartError saying what is wrong."""
    directory = Path(options.model_dir)
    model_path, tokenizer_path = directory / options.model_file, directory / options.tokenizer_file
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
    except Exception as exc:  # tokenizers raises plain Exceptions for a bad file
        raise ProviderStartError(
            f"{tokenizer_path} is not a usable tokenizer.json ({_first_line(exc)})"
        ) from None
    tokenizer.enable_truncation(options.max_length, strategy="longest_first")
    tokenizer.no_padding()  # each batch is padded to its longest pair, below
    settings = ort.SessionOptions()
    settings.intra_op_num_threads = options.intra_op_threads
    settings.inter_op_num_threads = 1
    settings.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle worker threads sleep instead of spinning: the cores are the gateway's too.
    settings.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(
            str(model_path), settings, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime's own exception types, by format and graph
        raise ProviderStartError(
            f"{model_path} is not a loadable ONNX model ({_first_line(exc)})"
        ) from None
    inputs, output = _signature(model_path, session)
    return CrossEncoder(session, tokenizer, inputs, output, _pad_id(tokenizer))


def _signature(path: Path, session: ort.InferenceSession) -> tuple[tuple[str, ...], str]:
    names = tuple(i.name for i in session.get_inputs())
    missing = [n for n in REQUIRED_INPUTS if n not in names]
    unknown = [n for n in names if n not in KNOWN_INPUTS]
    if missing or unknown:
        raise ProviderStartError(
            f"{path} is not a cross-encoder export: it "
            + (f"lacks the inputs {', '.join(missing)}" if missing else "")
            + (" and " if missing and unknown else "")
            + (f"has inputs the gateway cannot feed ({', '.join(unknown)})" if unknown else "")
            + "; expected input_ids, attention_mask and optionally token_type_ids"
        )
    outputs = {o.name: o for o in session.get_outputs()}
    output = outputs.get("logits") or next(iter(outputs.values()))
    shape = output.shape
    if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != 1):
        raise ProviderStartError(
            f"{path} output {output.name!r} has shape {shape}, not [batch, 1]: export the "
            "model with one label (a reranker's text-classification head)"
        )
    return names, output.name


def _pad_id(tokenizer: Tokenizer) -> int:
    """The id of the padding token (BERT's [PAD], XLM-R's <pad>); masked out anyway."""
    for token in PAD_TOKENS:
        found = tokenizer.token_to_id(token)
        if found is not None:
            return found
    return 0


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0][:200]}" if text else exc.__class__.__name__


class OnnxProvider:
    """The `onnx` provider type."""

    type = "onnx"
    batch_relative = False
    options: OnnxOptions

    def __init__(self, name: str, options: OnnxOptions) -> None:
        self.name = name
        self.options = options
        self.squash = options.score == "sigmoid"
        self.score_scale = SIGMOID if self.squash else LOGIT
        self.model: CrossEncoder | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    async def start(self) -> None:
        if self.model is None:
            self.model = await asyncio.to_thread(load, self.options)
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self.options.workers, thread_name_prefix=f"onnx-{self.name}"
            )

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def rerank(self, call: UpstreamCall) -> UpstreamResult:
        if self.model is None or self._pool is None:
            raise ProviderError(f"{self.name}: not started", kind=STATUS, retryable=True)
        deadline = time.monotonic() + call.timeout_s
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._pool, self._score, self.model, call, deadline)
        try:
            async with asyncio.timeout(max(0.0, call.timeout_s)):
                scores, tokens = await job
        except TimeoutError:
            raise ProviderError(
                f"{self.name} did not finish scoring within {call.timeout_s:.3g} s",
                kind=TIMEOUT,
                retryable=True,
            ) from None
        return UpstreamResult(scores=scores, tokens=tokens, search_units=0)

    def _score(
        self, model: CrossEncoder, call: UpstreamCall, deadline: float
    ) -> tuple[list[float], int]:
        """Runs in the pool: the call's pairs in batches, stopping if the deadline passed
        (the awaiting side has given up by then, so the rest would be wasted cores)."""
        scores: list[float] = []
        tokens = 0
        size = self.options.batch_size
        for start in range(0, len(call.documents), size):
            if time.monotonic() >= deadline:
                raise TimeoutError
            try:
                logits, used = model.logits(call.query, call.documents[start : start + size])
            except Exception as exc:  # onnxruntime's failures at run time
                raise ProviderError(
                    f"{self.name}: the model failed to score ({_first_line(exc)})",
                    kind=STATUS,
                    retryable=True,
                    status=500,
                ) from None
            scores.extend(logits)
            tokens += used
        if self.squash:
            scores = [sigmoid(s) for s in scores]
        return scores, tokens

