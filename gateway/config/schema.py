"""The config's JSON Schema, from the same pydantic validator the gateway uses.

`rerank-gateway check-config --schema` prints it (editors and CI can check a config with
it), and the Helm chart's values.schema.json embeds it for the `config` value, so Helm
refuses a mistyped config before a pod starts. Cross-section checks (a deployment naming an
unknown provider, auth safety) are beyond a schema: `check-config` does those.

    python -m gateway.config.schema helm/rerank-gateway/values.schema.json

rewrites the chart's schema; tests/gateway/config/test_schema.py fails when it is out of date.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from gateway.config.loader import config_adapter
from providers.registry import installed_types

CHART_DESCRIPTION = (
    "The gateway's config.yaml; checked against the gateway's own schema here, and fully "
    "(cross-references too) by `rerank-gateway check-config`."
)


def config_schema(ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a config file, before `${VAR}` interpolation."""
    schema = config_adapter().json_schema(ref_template=ref_template)
    defs = schema.get("$defs", {})
    for provider_type in installed_types().values():
        # `type` has a default in the dataclass (so code can build options without it), but
        # a config entry must name it: it picks the options.
        options = defs.get(provider_type.options.__name__)
        if options is not None:
            options["required"] = ["type", *options.get("required", [])]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def chart_values_schema(values_schema: dict[str, Any]) -> dict[str, Any]:
    """The chart's values schema with `config` described by the config's schema.

    The chart's schema is draft-07, whose home for shared definitions is `definitions`.
    """
    config = config_schema(ref_template="#/definitions/{model}")
    del config["$schema"]
    definitions = config.pop("$defs", {})
    # The chart fills ledger.url from its `ledger` values when the config gives none, so a
    # `config.ledger` holding only settings (spill_dir, retention) is complete there.
    ledger = definitions["LedgerConfig"]
    ledger["required"] = [k for k in ledger.get("required", []) if k != "url"]
    if not ledger["required"]:
        del ledger["required"]
    config["description"] = CHART_DESCRIPTION
    updated = dict(values_schema)
    updated["properties"] = {**values_schema["properties"], "config": config}
    updated["definitions"] = definitions
    return updated


def main(argv: list[str]) -> int:
    (path,) = argv
    file = Path(path)
    current = json.loads(file.read_text(encoding="utf-8"))
    file.write_text(json.dumps(chart_values_schema(current), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
