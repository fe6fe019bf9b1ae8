"""The in-process `onnx` cross-encoder with a tiny model and tokenizer built by the tests
(tests/support/onnx_model.py): the real loading, tokenizing, batching and scoring code, served
through the gateway, and the start-up refusal of a directory without a usable model."""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from gateway.config import ConfigError, parse_config
from providers.onnx import OnnxOptions, OnnxProvider
from providers.types import TIMEOUT, ProviderError, ProviderStartError, UpstreamCall
from tests.conftest import teams_config
from tests.support.onnx_model import build_cross_encoder, build_model, expected_logit, pair_tokens
from tests.support.paths import ROOT
from tests.support.processes import GatewayProcess
from tests.support.selfhosted import MANY_DOCS, QUERY, provider_config, serves_v2_and_v1, uncached
from tests.support.servers import free_port

# Lengths differ, so every batch pads: scores must not depend on the padding.
DOCS = [*MANY_DOCS[:6], "Paris", "apple pie and rockets in orbit, notes on notes on notes", ""]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def order(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))


def run(options: OnnxOptions, documents: list[str], timeout_s: float = 10.0) -> tuple:
    async def go() -> tuple:
        provider = OnnxProvider("cross", options)
        await provider.start()
        try:
            result = await provider.rerank(UpstreamCall("m", QUERY, documents, timeout_s))
            threads = [t.name for t in threading.enumerate()]
            return result, threads
        finally:
            await provider.close()

    return asyncio.run(go())


def test_ranks_through_the_gateway_on_v2_and_v1(
    model_dir: Path, start_gateway: Callable[..., str]
) -> None:
    settings = {"type": "onnx", "model_dir": str(model_dir), "batch_size": 4}
    gateway = start_gateway(uncached(provider_config({"cross": settings}, "minilm", "tiny")))
    expected = [sigmoid(expected_logit(QUERY, d)) for d in DOCS]
    scores = serves_v2_and_v1(gateway, "minilm", DOCS, order(expected), scale="sigmoid")
    assert scores == [pytest.approx(expected[i], abs=1e-5) for i in order(expected)[:3]]


@pytest.mark.parametrize("batch_size", [1, 2, 4, 64])
def test_batches_and_padding_do_not_change_scores(model_dir: Path, batch_size: int) -> None:
    options = OnnxOptions(model_dir=str(model_dir), batch_size=batch_size, score="logit")
    result, threads = run(options, DOCS)
    assert result.scores == [pytest.approx(expected_logit(QUERY, d), abs=1e-5) for d in DOCS]
    # The pair's tokens: [CLS] query [SEP] document [SEP], padding not counted.
    assert result.tokens == sum(pair_tokens(QUERY, d) for d in DOCS)
    assert result.search_units == 0
    assert any(name.startswith("onnx-cross") for name in threads)  # scored in its own pool


def test_an_export_without_token_type_ids_gets_only_its_inputs(tmp_path: Path) -> None:
    directory = build_cross_encoder(tmp_path, token_types=False)
    result, _ = run(OnnxOptions(model_dir=str(directory), score="logit"), DOCS[:4])
    expected = [expected_logit(QUERY, d, token_types=False) for d in DOCS[:4]]
    assert result.scores == [pytest.approx(e, abs=1e-5) for e in expected]


def test_long_pairs_are_truncated_to_max_length(model_dir: Path) -> None:
    long_doc = " ".join(["paris"] * 200)
    result, _ = run(OnnxOptions(model_dir=str(model_dir), max_length=16, score="logit"), [long_doc])
    # 16 tokens: [CLS] capital of france [SEP], 10 of "paris", [SEP].
    cut = " ".join(["paris"] * 10)
    assert result.scores == [pytest.approx(expected_logit(QUERY, cut), abs=1e-5)]
    assert result.tokens == 16


def test_no_time_left_is_a_timeout(model_dir: Path) -> None:
    with pytest.raises(ProviderError) as info:
        run(OnnxOptions(model_dir=str(model_dir)), DOCS, timeout_s=0.0)
    assert info.value.kind == TIMEOUT and info.value.retryable


@pytest.mark.parametrize(
    ("build", "problem"),
    [
        (lambda d: (d / "model.onnx").write_bytes(b"not a model"), "is not a loadable ONNX model"),
        (lambda d: build_model(d / "model.onnx", labels=2), "has shape ['batch', 2], not [batch, 1]"),
        (lambda d: build_model(d / "model.onnx", drop_mask=True), "lacks the inputs attention_mask"),
        (lambda d: (d / "tokenizer.json").write_text("{}"), "is not a usable tokenizer.json"),
    ],
)
def test_an_unusable_directory_refuses_to_start(
    tmp_path: Path, build: Callable[[Path], object], problem: str
) -> None:
    directory = build_cross_encoder(tmp_path)
    build(directory)
    with pytest.raises(ProviderStartError) as info:
        run(OnnxOptions(model_dir=str(directory)), DOCS)
    assert problem in str(info.value)
    assert str(directory) in str(info.value)


@pytest.mark.parametrize(
    ("remove", "problem"),
    [
        ("model.onnx", "model_file: '{dir}/model.onnx' does not exist"),
        ("tokenizer.json", "tokenizer_file: '{dir}/tokenizer.json' does not exist"),
    ],
)
def test_missing_files_are_config_errors(tmp_path: Path, remove: str, problem: str) -> None:
    directory = build_cross_encoder(tmp_path)
    (directory / remove).unlink()
    data = provider_config({"cross": {"type": "onnx", "model_dir": str(directory)}}, "m", "m")
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    assert "providers.cross" in str(info.value)
    assert problem.format(dir=directory) in str(info.value)
    data["providers"]["cross"]["model_dir"] = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="is not a directory"):
        parse_config(data, {})


def test_the_gateway_process_refuses_to_start_with_a_broken_model(tmp_path: Path) -> None:
    directory = build_cross_encoder(tmp_path / "model")
    (directory / "model.onnx").write_bytes(b"\x08\x01garbage")
    config = tmp_path / "gateway.json"  # JSON is YAML
    config.write_text(
        json.dumps(
            {
                "auth": {"mode": "none"},
                "providers": {"cross": {"type": "onnx", "model_dir": str(directory)}},
                "models": {"minilm": {"deployments": [{"provider": "cross", "model": "x"}]}},
            }
        )
    )
    gateway = GatewayProcess("--config", str(config), "--port", str(free_port()))
    try:
        refused = gateway.wait_event("startup_refused")
        assert refused["reason"].startswith("providers.cross: ")
        assert f"{directory}/model.onnx is not a loadable ONNX model" in refused["reason"]
        assert gateway.proc.wait(30) == 1
    finally:
        gateway.stop()


def test_the_documented_config_serves_and_falls_back(
    model_dir: Path, start_gateway: Callable[..., str]
) -> None:
    """The block marked `<!-- onnx-config -->` in docs/providers.md, pointed at the tiny
    model, ranks on both routes."""
    text = (ROOT / "docs" / "providers.md").read_text()
    match = re.search(r"<!-- onnx-config -->\s*```yaml\n(.*?)```", text, re.S)
    assert match, "docs/providers.md lost its onnx-config block"
    data = yaml.safe_load(match.group(1).replace("/models/ms-marco-minilm-l6", str(model_dir)))
    gateway = start_gateway(uncached(teams_config(data["providers"], data["models"])))
    expected = [sigmoid(expected_logit(QUERY, d)) for d in DOCS]
    serves_v2_and_v1(gateway, "ms-marco-minilm-l6", DOCS, order(expected), scale="sigmoid")
