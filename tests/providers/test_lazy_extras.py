"""The optional SDKs (botocore, oci, numpy, onnxruntime, tokenizers) load only when a
provider that needs one is built: reading a config that names none of them imports none
(it used to import all, ~80 MB per process), and one that names such a type still reads,
validates and builds as before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from providers import bedrock, extra_options, oci, onnx, vertex
from providers.registry import PROVIDER_TYPES, build_provider
from tests.conftest import gateway_config
from tests.support.paths import ROOT

SDKS = ("oci", "botocore", "numpy", "onnxruntime", "tokenizers", "providers.google_auth")


def imported_after_reading(path: Path) -> list[str]:
    script = (
        "import sys\n"
        "from gateway.config import load_config\n"
        f"load_config({str(path)!r})\n"
        f"print(','.join(m for m in {SDKS!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [m for m in out.stdout.strip().split(",") if m]


def test_a_config_without_those_types_imports_no_sdk(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(gateway_config({"cohere-a": "http://127.0.0.1:1"})))
    assert imported_after_reading(path) == []


def test_a_config_with_such_a_type_reads_and_builds_as_before(tmp_path: Path) -> None:
    data = gateway_config({"cohere-a": "http://127.0.0.1:1"})
    data["providers"]["oracle"] = {"type": "oci", "compartment_id": "ocid1.x", "region": "r"}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data))
    assert imported_after_reading(path) == []  # read and validated, nothing built yet
    options = PROVIDER_TYPES["oci"].options(
        compartment_id="ocid1.x", endpoint_url="http://127.0.0.1:1", auth="api_key",
        tenancy="t", user="u", fingerprint="f", private_key="pem",
    )  # fmt: skip
    provider = build_provider("oracle", "oci", options)
    assert isinstance(provider, oci.OciProvider) and provider.name == "oracle"


def test_each_provider_module_still_offers_its_options_class() -> None:
    for module, name in (
        (bedrock, "BedrockOptions"),
        (oci, "OciOptions"),
        (vertex, "VertexOptions"),
        (onnx, "OnnxOptions"),
    ):
        assert getattr(module, name) is getattr(extra_options, name)
        assert PROVIDER_TYPES[name[: -len("Options")].lower()].options is getattr(module, name)
