"""A tiny cross-encoder ONNX model and `tokenizer.json`, built here (no weights can be
downloaded), with the interface of a Hugging Face reranker exported by Optimum: inputs
`input_ids`, `attention_mask` and (BERT-style) `token_type_ids`, int64 [batch, sequence];
output `logits`, float [batch, 1].

The "model" adds one weight per token (plus one per segment) over the positions the
attention mask keeps, plus a bias: `logit = sum(mask * (W[id] + T[type])) + b`. Words
about the capital of France weigh most, so it ranks like a reranker would on the test
documents. The padding token weighs a lot, so a run that ignored the attention mask
would score differently. `expected_logit` computes the same number without the
tokenizer or onnxruntime, from the words.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel

SPECIAL = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
WORDS = [
    "capital", "of", "france", "paris", "is", "the", "document", "notes", "on", "topic",
    "rockets", "orbit", "apple", "pie",
]  # fmt: skip
VOCAB = {token: i for i, token in enumerate(SPECIAL + WORDS)}
WEIGHTS = {"[PAD]": 7.0, "capital": 1.0, "france": 1.0, "paris": 2.0, "[UNK]": -0.05}
TYPE_WEIGHTS = (0.0, 0.1)  # segment 0 (the query), segment 1 (the document)
BIAS = -3.0
_WORD = re.compile(r"\w+|[^\w\s]+")


def token_weight(token: str) -> float:
    return WEIGHTS.get(token, -0.01 if token in VOCAB else WEIGHTS["[UNK]"])


def build_tokenizer(path: Path) -> None:
    tokenizer = Tokenizer(WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", VOCAB["[CLS]"]), ("[SEP]", VOCAB["[SEP]"])],
    )
    tokenizer.save(str(path))


def build_model(
    path: Path, *, token_types: bool = True, labels: int = 1, drop_mask: bool = False
) -> None:
    """The graph; `token_types=False` is an XLM-R-style export (no `token_type_ids`),
    `labels` > 1 and `drop_mask` make exports the gateway must refuse."""
    weights = np.array([[token_weight(t)] * labels for t in VOCAB], dtype=np.float32)
    initializers = [
        numpy_helper.from_array(weights, "W"),
        numpy_helper.from_array(np.array(TYPE_WEIGHTS, np.float32).reshape(2, 1), "T"),
        numpy_helper.from_array(np.array([BIAS], np.float32), "b"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    seq = ["batch", "sequence"]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, seq)]
    if not drop_mask:
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, seq))
    nodes = [helper.make_node("Gather", ["W", "input_ids"], ["per_token"])]
    if token_types:
        inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, seq))
        nodes += [
            helper.make_node("Gather", ["T", "token_type_ids"], ["per_type"]),
            helper.make_node("Add", ["per_token", "per_type"], ["summed"]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["per_token"], ["summed"]))
    if drop_mask:
        nodes.append(helper.make_node("Identity", ["summed"], ["masked"]))
    else:
        nodes += [
            helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["mask_f", "axis2"], ["mask3"]),
            helper.make_node("Mul", ["summed", "mask3"], ["masked"]),
        ]
    nodes += [
        helper.make_node("ReduceSum", ["masked", "axis1"], ["pooled"], keepdims=0),
        helper.make_node("Add", ["pooled", "b"], ["logits"]),
    ]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", labels])
    graph = helper.make_graph(nodes, "tiny-cross-encoder", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime releases of the last years all read
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def build_cross_encoder(directory: Path, **model_options: bool | int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    build_tokenizer(directory / "tokenizer.json")
    build_model(directory / "model.onnx", **model_options)  # type: ignore[arg-type]
    return directory


def expected_logit(query: str, document: str, token_types: bool = True) -> float:
    """The model's logit for the pair, from the words (pairs shorter than max_length)."""
    q = [w.lower() for w in _WORD.findall(query)]
    d = [w.lower() for w in _WORD.findall(document)]
    first = ["[CLS]", *q, "[SEP]"]
    second = [*d, "[SEP]"]
    types = TYPE_WEIGHTS if token_types else (0.0, 0.0)
    total = sum(token_weight(t) + types[0] for t in first)
    total += sum(token_weight(t) + types[1] for t in second)
    return total + BIAS


def pair_tokens(query: str, document: str) -> int:
    """Tokens of the pair: [CLS] query [SEP] document [SEP]."""
    return len(_WORD.findall(query)) + len(_WORD.findall(document)) + 3
