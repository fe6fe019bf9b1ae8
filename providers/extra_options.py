"""The options of the provider types whose SDK is an optional extra (bedrock, oci, vertex,
onnx), apart from their providers.

The config's schema is a union over every installed type's options class, so reading
any config needs these classes; their providers' modules import the SDKs (botocore,
oci, cryptography, numpy, onnxruntime, tokenizers: about 80 MB of a process's memory
together). Kept here, light, a config that names none of those types reads without
importing any SDK; `providers.registry` checks that a type's SDK is installed and
imports its provider's module only when a provider of that type is built. Each
provider's module re-exports its options class, so either import works.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from annotated_types import Ge, Interval

from providers.http import UpstreamOptions, check_endpoint, check_http_url

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")  # an AWS region
_ENDPOINT_TEMPLATE = "https://inference.generativeai.{region}.oci.{secondLevelDomain}"
Auth = Literal["config_file", "api_key", "instance_principal", "resource_principal"]  # OCI


@dataclass
class BedrockOptions(UpstreamOptions):
    region: str
    api: Literal["invoke", "rerank"] = "invoke"
    endpoint_url: str | None = None  # VPC endpoint or a fake; default from api and region
    profile: str | None = None  # AWS shared-config profile; default: the standard chain
    api_key: str | None = None  # Bedrock API key, sent as Bearer instead of SigV4 (invoke)
    forward_max_tokens_per_doc: bool = False
    type: Literal["bedrock"] = "bedrock"  # the config's `type` key: selects this options class

    def __post_init__(self) -> None:
        if not _REGION.match(self.region):
            raise ValueError(f"region must be an AWS region like us-east-1 (got {self.region!r})")
        check_http_url("endpoint_url", self.endpoint_url)
        if self.api_key is not None and self.api == "rerank":
            raise ValueError(
                "api_key (a Bedrock API key) works with api: invoke only; "
                "the Rerank API needs SigV4 credentials"
            )
        if self.api_key is not None and self.profile is not None:
            raise ValueError("give either api_key or profile, not both")


@dataclass
class OciOptions(UpstreamOptions):
    compartment_id: str
    region: str | None = None
    endpoint_url: str | None = None  # default: the Generative AI inference host of region
    auth: Auth = "config_file"
    config_file: str = "~/.oci/config"
    profile: str = "DEFAULT"
    # auth: api_key
    tenancy: str | None = None
    user: str | None = None
    fingerprint: str | None = None
    private_key: str | None = None  # PEM content
    private_key_file: str | None = None
    pass_phrase: str | None = None
    serving_mode: Literal["on_demand", "dedicated"] = "on_demand"
    endpoint_id: str | None = None  # for serving_mode: dedicated
    type: Literal["oci"] = "oci"  # the config's `type` key: selects this options class

    def __post_init__(self) -> None:
        check_http_url("endpoint_url", self.endpoint_url)
        if self.region is None and self.endpoint_url is None:
            raise ValueError("needs a region (e.g. us-chicago-1) or an endpoint_url")
        if not self.compartment_id.startswith("ocid1."):
            raise ValueError(f"compartment_id must be an OCID (got {self.compartment_id!r})")
        if self.serving_mode == "dedicated" and not self.endpoint_id:
            raise ValueError(
                "serving_mode: dedicated needs endpoint_id (ocid1.generativeaiendpoint...)"
            )
        if self.auth == "api_key":
            missing = [k for k in ("tenancy", "user", "fingerprint") if not getattr(self, k)]
            if missing:
                raise ValueError(f"auth: api_key needs {', '.join(missing)}")
            if (self.private_key is None) == (self.private_key_file is None):
                raise ValueError(
                    "auth: api_key needs exactly one of private_key (PEM) or private_key_file"
                )

    def endpoint(self) -> str:
        if self.endpoint_url is not None:
            return self.endpoint_url.rstrip("/")
        import oci  # the SDK: imported when a provider of this type is built, not before

        url: str = oci.regions.endpoint_for(
            "generative_ai_inference",
            self.region,
            service_endpoint_template=_ENDPOINT_TEMPLATE,
            endpoint_service_name="generativeai",
        )
        return url


@dataclass
class VertexOptions(UpstreamOptions):
    project: str
    location: str = "global"  # others are UNVERIFIED
    ranking_config: str = "default_ranking_config"
    credentials_file: str | None = None  # service-account key; else GOOGLE_APPLICATION_CREDENTIALS
    credentials_json: str | None = None  # the key's content, e.g. "${GOOGLE_SA_KEY_JSON}"
    token_url: str | None = None  # default: the key's token_uri
    quota_project: str | None = None  # sent as X-Goog-User-Project when set
    base_url: str = "https://discoveryengine.googleapis.com"
    api_version: Literal["v1", "v1beta", "v1alpha"] = "v1"
    max_batch_size: Annotated[int, Ge(1)] = 200  # records per request
    type: Literal["vertex"] = "vertex"  # the config's `type` key: selects this options class

    def __post_init__(self) -> None:
        check_endpoint(self.base_url, None)
        check_http_url("token_url", self.token_url)
        for name in ("project", "location", "ranking_config"):
            value = getattr(self, name)
            if not value or "/" in value:
                raise ValueError(f"{name} must be a non-empty name without '/' (got {value!r})")
        if self.credentials_file and self.credentials_json:
            raise ValueError("set credentials_file or credentials_json, not both")

    @property
    def path(self) -> str:
        return (
            f"/{self.api_version}/projects/{quote(self.project)}/locations/"
            f"{quote(self.location)}/rankingConfigs/{quote(self.ranking_config)}:rank"
        )

    @property
    def api_key(self) -> None:  # OAuth only: HttpProvider sends no static key
        return None


@dataclass
class OnnxOptions:
    model_dir: str
    model_file: str = "model.onnx"  # inside model_dir (e.g. onnx/model_quint8_avx2.onnx)
    tokenizer_file: str = "tokenizer.json"  # inside model_dir
    max_length: Annotated[int, Interval(ge=8, le=8192)] = 512  # tokens per (query, document)
    batch_size: Annotated[int, Ge(1)] = 16  # pairs per model run
    workers: Annotated[int, Interval(ge=1, le=64)] = 1  # model runs at once
    intra_op_threads: Annotated[int, Interval(ge=1, le=64)] = 1  # cores one run may use
    score: Literal["sigmoid", "logit"] = "sigmoid"
    type: Literal["onnx"] = "onnx"  # the config's `type` key: selects this options class

    def __post_init__(self) -> None:
        # Read when the config is read, so check-config names a missing file at once; the
        # model itself is only loaded (and judged) at start.
        directory = Path(self.model_dir)
        if not directory.is_dir():
            raise ValueError(f"model_dir {self.model_dir!r} is not a directory")
        for option in ("model_file", "tokenizer_file"):
            path = directory / getattr(self, option)
            if not path.is_file():
                raise ValueError(
                    f"{option}: {str(path)!r} does not exist (export a cross-encoder with "
                    "optimum-cli export onnx --task text-classification; see docs/providers.md)"
                )
