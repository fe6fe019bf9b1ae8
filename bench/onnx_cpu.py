"""CPU per 50-document request of the in-process `onnx` provider (`python -m bench.onnx_cpu`).

No model weights can be downloaded here, so three graphs are built on the spot and run
through the provider's real code (tokenizer, batching, onnxruntime):

- `tiny`: the test model (tests/support/onnx_model.py): a token-weight sum, no transformer; what
  the provider's own overhead costs (tokenizing, padding, the thread hop);
- `minilm-l6-shaped`: a BERT encoder with ms-marco-MiniLM-L-6-v2's shape (6 layers,
  hidden 384, 12 heads, FFN 1536) and random weights: the same arithmetic per token;
- `bge-base-shaped`: bge-reranker-base's encoder shape (12 layers, hidden 768, 12 heads,
  FFN 3072) with a small vocabulary (the real 250k-token embedding table is memory, not
  arithmetic).

Each request is 50 documents of `--words` words plus a 6-word query (about words + 9
tokens per pair with this word-level tokenizer). CPU time is the process's
(`time.process_time`, every thread), divided by the requests made. Results vary with the
machine's load: the numbers are for the notes, never for a test.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from providers.onnx import OnnxOptions, OnnxProvider
from providers.types import UpstreamCall
from tests.support.onnx_model import build_cross_encoder

VOCAB_WORDS = 2000


def _tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    vocab = {t: i for i, t in enumerate(["[PAD]", "[CLS]", "[SEP]", "[UNK]"])}
    vocab.update({f"w{i}": i + 4 for i in range(VOCAB_WORDS)})
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 1), ("[SEP]", 2)],
    )
    tokenizer.save(str(path))


def _encoder(path: Path, layers: int, hidden: int, heads: int, ffn: int) -> int:
    """A BERT-style cross-encoder graph with random weights; returns its parameter count."""
    rng = np.random.default_rng(0)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    params = 0

    def weight(name: str, *shape: int) -> str:
        nonlocal params
        params += int(np.prod(shape))
        inits.append(
            numpy_helper.from_array((rng.standard_normal(shape) * 0.02).astype(np.float32), name)
        )
        return name

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs: object) -> str:
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def norm(x: str, name: str) -> str:
        scale = const(f"{name}.g", np.ones(hidden, np.float32))
        bias = const(f"{name}.b", np.zeros(hidden, np.float32))
        return node("LayerNormalization", [x, scale, bias], f"{name}.out", axis=-1)

    def dense(x: str, name: str, n_in: int, n_out: int) -> str:
        w = weight(f"{name}.w", n_in, n_out)
        b = weight(f"{name}.bias", n_out)
        return node("Add", [node("MatMul", [x, w], f"{name}.mm"), b], f"{name}.out")

    head = hidden // heads
    split = const("split_shape", np.array([0, 0, heads, head], np.int64))
    merge = const("merge_shape", np.array([0, 0, hidden], np.int64))
    scale = const("scale", np.array(1 / np.sqrt(head), np.float32))
    emb = node("Gather", [weight("tok", VOCAB_WORDS + 4, hidden), "input_ids"], "tok.out")
    typ = node("Gather", [weight("typ", 2, hidden), "token_type_ids"], "typ.out")
    x = norm(node("Add", [emb, typ], "emb.sum"), "emb.norm")
    mask = node("Cast", ["attention_mask"], "mask.f", to=TensorProto.FLOAT)
    mask = node("Unsqueeze", [mask, const("axes12", np.array([1, 2], np.int64))], "mask.4d")
    one, big = const("one", np.array(1.0, np.float32)), const("big", np.array(-1e4, np.float32))
    bias = node("Mul", [node("Sub", [one, mask], "mask.inv"), big], "mask.bias")
    for n in range(layers):
        p = f"l{n}"
        q, k, v = (
            node(
                "Transpose",
                [node("Reshape", [dense(x, f"{p}.{t}", hidden, hidden), split], f"{p}.{t}.r")],
                f"{p}.{t}.t",
                perm=perm,
            )
            for t, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3]))
        )
        att = node(
            "Add",
            [node("Mul", [node("MatMul", [q, k], f"{p}.qk"), scale], f"{p}.sc"), bias],
            f"{p}.masked",
        )
        ctx = node("MatMul", [node("Softmax", [att], f"{p}.sm", axis=-1), v], f"{p}.ctx")
        ctx = node(
            "Reshape",
            [node("Transpose", [ctx], f"{p}.ctx.t", perm=[0, 2, 1, 3]), merge],
            f"{p}.ctx.r",
        )
        x = norm(node("Add", [x, dense(ctx, f"{p}.o", hidden, hidden)], f"{p}.res1"), f"{p}.n1")
        up = dense(x, f"{p}.up", hidden, ffn)
        act = node(
            "Mul",
            [
                up,
                node(
                    "Sigmoid",
                    [node("Mul", [up, const(f"{p}.k", np.array(1.702, np.float32))], f"{p}.gk")],
                    f"{p}.gs",
                ),
            ],
            f"{p}.gelu",
        )
        x = norm(node("Add", [x, dense(act, f"{p}.down", ffn, hidden)], f"{p}.res2"), f"{p}.n2")
    cls = node("Gather", [x, const("zero", np.array(0, np.int64))], "cls", axis=1)
    node(
        "Add",
        [node("MatMul", [cls, weight("head", hidden, 1)], "head.mm"), weight("head.b", 1)],
        "logits",
    )
    seq = ["batch", "sequence"]
    graph = helper.make_graph(
        nodes,
        "encoder",
        [
            helper.make_tensor_value_info(n, TensorProto.INT64, seq)
            for n in ("input_ids", "attention_mask", "token_type_ids")
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return params


def _measure(
    directory: Path, words: int, requests: int, threads: int, batch: int
) -> tuple[float, float]:
    """(CPU ms, wall ms) per 50-document request."""
    rng = random.Random(1)
    vocabulary = [f"w{i}" for i in range(VOCAB_WORDS)]

    def text(n: int) -> str:
        return " ".join(rng.choice(vocabulary) for _ in range(n))

    options = OnnxOptions(model_dir=str(directory), intra_op_threads=threads, batch_size=batch)

    async def run() -> tuple[float, float]:
        provider = OnnxProvider("bench", options)
        await provider.start()
        calls = [
            UpstreamCall("m", text(6), [text(words) for _ in range(50)], 600.0)
            for _ in range(requests + 1)
        ]
        await provider.rerank(calls[0])  # warm-up: first-run allocations
        cpu, wall = time.process_time(), time.perf_counter()
        for call in calls[1:]:
            await provider.rerank(call)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await provider.close()
        return cpu * 1000 / requests, wall * 1000 / requests

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, nargs="+", default=[20, 100, 200])
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--models", nargs="+", default=["tiny", "minilm-l6-shaped", "bge-base-shaped"]
    )
    args = parser.parse_args()
    shapes = {"minilm-l6-shaped": (6, 384, 12, 1536), "bge-base-shaped": (12, 768, 12, 3072)}
    with tempfile.TemporaryDirectory() as tmp:
        print(
            "| model | params built | words/doc | intra-op threads | CPU ms / 50 docs | wall ms |"
        )
        print("|---|---|---|---|---|---|")
        for name in args.models:
            directory = Path(tmp) / name
            if name == "tiny":
                build_cross_encoder(directory)
                params = 0
            else:
                directory.mkdir()
                _tokenizer(directory / "tokenizer.json")
                params = _encoder(directory / "model.onnx", *shapes[name])
            for words in args.words:
                for threads in args.threads:
                    requests = args.requests if name != "tiny" else args.requests * 10
                    cpu, wall = _measure(directory, words, requests, threads, args.batch)
                    row = (name, f"{params / 1e6:.1f}M", words, threads, f"{cpu:.1f}")
                    row += (f"{wall:.1f}",)
                    print("| " + " | ".join(map(str, row)) + " |", flush=True)


if __name__ == "__main__":
    main()
