"""A start that tells the truth, on real `serve` processes: a port already in use is
refused in one line, one `starting` summary line, `--version`, JSON logs from the
supervisor too, a killed worker replaced while the port keeps answering, and SIGHUP
naming the settings that need a restart."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.cli.startup import version
from tests.conftest import REDIS_URL, TEAM_KEY, gateway_config
from tests.fakes.cohere import FakeCohere
from tests.support.paths import ROOT
from tests.support.processes import GatewayProcess
from tests.support.servers import ServerLoop, free_port

AUTH = {"Authorization": f"Bearer {TEAM_KEY}"}
BODY = {"model": "local-bm25", "query": "capital", "documents": ["Paris is a capital", "x"]}


@pytest.fixture
def config(tmp_path: Path, servers: ServerLoop) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(gateway_config({"cohere-a": servers.serve(FakeCohere().app())})))
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_version() -> None:
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"rerank-gateway {version()}"
    assert version() != "unknown"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_refused_in_one_line(config: Path, workers: str) -> None:
    port = free_port()
    # Another process holds the port with SO_REUSEPORT, as a second gateway's workers would:
    # sharing it silently would split the traffic between the two.
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        out = run_cli("serve", "--config", str(config), "--port", str(port), "--workers", workers)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"rerank-gateway: cannot listen on 127.0.0.1:{port}: the address is already in use "
        "by another process; stop it or choose another --port"
    ]
    assert "Traceback" not in out.stdout + out.stderr
    assert "Unclosed" not in out.stdout + out.stderr
    assert '"listening"' not in out.stdout


def test_one_summary_line_at_start(tmp_path: Path, servers: ServerLoop) -> None:
    data = gateway_config({"cohere-a": servers.serve(FakeCohere().app())})
    data["providers"]["nokey"] = {"type": "cohere", "base_url": "http://127.0.0.1:1"}
    data["state"] = {"redis_url": f"redis://127.0.0.1:{free_port()}/0"}  # nobody listens
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data))
    port = free_port()
    gw = GatewayProcess("--config", str(path), "--port", str(port))
    try:
        gw.wait_ready(f"http://127.0.0.1:{port}", timeout=60)
        line = gw.wait_event("starting")
        assert line["version"] == version() and line["workers"] == 1 and line["port"] == port
        assert line["auth"] == "keys" and line["teams"] == 2
        assert line["models"] == ["local-bm25", "rerank-v3.5"]
        assert line["providers"] == {
            "cohere-a": "cohere: credentials set",
            "nokey": "cohere: credentials missing",
            "offline": "local: none needed",
        }
        assert line["redis"].startswith("unreachable (redis://127.0.0.1:")
        assert (line["cache"], line["limits"]) == ("redis", "redis")  # the Redis defaults
        assert sum(1 for e in gw.seen if e["event"] == "starting") == 1
        assert "upstream-key" not in "".join(gw.raw)  # no secret in the logs
    finally:
        assert gw.stop() == 0


def test_summary_says_redis_is_reachable(tmp_path: Path, servers: ServerLoop) -> None:
    data = gateway_config({"cohere-a": servers.serve(FakeCohere().app())})
    data["state"] = {"redis_url": REDIS_URL}
    data["limits"] = {"redis_prefix": f"rg-test-start-{time.time_ns()}:"}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data))
    port = free_port()
    gw = GatewayProcess("--config", str(path), "--port", str(port))
    try:
        gw.wait_ready(f"http://127.0.0.1:{port}", timeout=60)
        assert gw.wait_event("starting")["redis"] == f"ok ({REDIS_URL})"
    finally:
        assert gw.stop() == 0


def test_a_killed_worker_is_replaced_and_the_port_keeps_answering(
    config: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gw = GatewayProcess("--config", str(config), "--port", str(port), "--workers", "2")
    try:
        gw.wait_ready(url, timeout=60)
        pids = {e["pid"] for e in gw.collect("listening", 2, timeout=60)}
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        died = gw.wait_event("worker_died", timeout=60)
        assert died["exitcode"] == -signal.SIGKILL and died["restart_in_s"] > 0
        # The other worker answers meanwhile: the port never goes dark.
        for _ in range(5):
            assert httpx.post(url + "/v2/rerank", json=BODY, headers=AUTH).status_code == 200
        gw.wait_event("worker_restarted", timeout=60)
        fresh = {e["pid"] for e in gw.collect("listening", 3, timeout=60)} - pids
        assert len(fresh) == 1 and victim not in fresh
        assert httpx.post(url + "/v2/rerank", json=BODY, headers=AUTH).status_code == 200
        # Every line, the supervisor's included, is JSON.
        lines = [line for line in gw.raw if line.strip()]
        assert all(line.startswith("{") for line in lines), [
            line for line in lines if not line.startswith("{")
        ]
        assert json.loads(lines[0])["event"] == "starting"
    finally:
        assert gw.stop() == 0


def test_sighup_names_settings_that_need_a_restart(config: Path, servers: ServerLoop) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gw = GatewayProcess("--config", str(config), "--port", str(port))
    try:
        gw.wait_ready(url, timeout=60)
        data = yaml.safe_load(config.read_text())
        data["server"] = {"port": 9999, "workers": 3, "max_body_bytes": 65536}
        config.write_text(yaml.safe_dump(data))
        gw.signal(signal.SIGHUP)
        changed = gw.wait_event("restart_needed")["changed"]
        assert changed == {
            "server.port": "8080 -> 9999",
            "server.workers": "1 -> 3",
            "server.max_body_bytes": "16777216 -> 65536",
        }
        assert httpx.get(url + "/healthz").status_code == 200  # still on the old port
    finally:
        assert gw.stop() == 0


def test_check_config_warns_about_per_process_limits(tmp_path: Path) -> None:
    data = gateway_config({"cohere-a": "http://127.0.0.1:1"}, server={"workers": 4})
    data["teams"]["search"]["budget"] = {"usd_per_day": 5}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data))
    out = run_cli("check-config", str(path))
    assert out.returncode == 0
    assert (
        "warning: server.workers is 4 with limits.limits_backend memory: the rate limits and "
        "budgets of search are enforced by each worker on its own (up to 4x what is configured)"
    ) in out.stdout
    data["state"] = {"redis_url": REDIS_URL}  # limits then default to Redis: no warning
    path.write_text(yaml.safe_dump(data))
    out = run_cli("check-config", str(path))
    assert out.returncode == 0 and "warning" not in out.stdout


def plain_http_config() -> dict:
    data = gateway_config({"cohere-a": "http://rerank.internal:8080"})  # keyed, remote
    data["providers"].update(
        {
            "tei-local": {"type": "tei", "base_url": "http://127.0.0.1:8081", "api_key": "k"},
            "tei-open": {"type": "tei", "base_url": "http://tei.internal:8081"},  # no key
            "jina": {"type": "jina", "api_key": "k"},  # https by default
            "aws": {"type": "bedrock", "region": "us-east-1", "endpoint_url": "http://vpce.x"},
        }
    )
    data["telemetry"] = {"otlp_endpoint": "http://otel.x:4318", "headers": {"api-key": "k"}}
    return data


def test_check_config_warns_about_credentials_sent_over_plain_http(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(plain_http_config()))
    out = run_cli("check-config", str(path))
    assert out.returncode == 0
    warned = [line for line in out.stdout.splitlines() if "plain http://" in line]
    assert warned == [  # in the file's order (safe_dump sorts the keys)
        "  warning: providers.aws sends SigV4-signed requests (AWS credentials) over plain "
        "http:// to vpce.x: anyone on the network path can read it; use https:// (only "
        "loopback addresses are exempt from this warning)",
        "  warning: providers.cohere-a sends its api_key over plain http:// to rerank.internal: "
        "anyone on the network path can read it; use https:// (only loopback addresses are "
        "exempt from this warning)",
        "  warning: telemetry.otlp_endpoint sends telemetry.headers over plain http:// to "
        "otel.x: anyone on the network path can read it; use https:// (only loopback "
        "addresses are exempt from this warning)",
    ]
    secure = yaml.safe_dump(plain_http_config()).replace("http://", "https://")
    path.write_text(secure)
    out = run_cli("check-config", str(path))
    assert out.returncode == 0 and "warning" not in out.stdout


def test_serve_logs_credentials_sent_over_plain_http_at_start(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(plain_http_config()))
    port = free_port()
    gw = GatewayProcess("--config", str(path), "--port", str(port))
    try:
        gw.wait_ready(f"http://127.0.0.1:{port}", timeout=60)
        gw.wait_event("listening")  # every line logged before it is in `seen` now
        warned = [e for e in gw.seen if e["event"] == "plain_http_upstream"]
        assert [e["detail"].split(" sends ")[0] for e in warned] == [
            "providers.aws",
            "providers.cohere-a",
            "telemetry.otlp_endpoint",
        ]
        assert all(e["level"] == "warning" for e in warned)
    finally:
        assert gw.stop() == 0


# --------------------------------------------------------------------------------------
# Config rules and reading only what is needed


def test_shared_state_defaults_to_redis_unless_the_file_says_otherwise() -> None:
    from gateway.config import parse_config

    base = gateway_config({"cohere-a": "http://127.0.0.1:1"}, state={"redis_url": REDIS_URL})
    config = parse_config(base, {})
    assert (config.cache.backend, config.limits.limits_backend) == ("redis", "redis")
    explicit = {**base, "cache": {"backend": "memory"}, "limits": {"limits_backend": "memory"}}
    config = parse_config(explicit, {})
    assert (config.cache.backend, config.limits.limits_backend) == ("memory", "memory")
    without = parse_config(gateway_config({"cohere-a": "http://127.0.0.1:1"}), {})
    assert (without.cache.backend, without.limits.limits_backend) == ("memory", "memory")


def test_the_admin_key_must_differ_from_every_team_key(tmp_path: Path) -> None:
    data = gateway_config({"cohere-a": "http://127.0.0.1:1"})
    data["auth"]["admin_key_sha256"] = data["teams"]["search"]["key_sha256"][0]
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data))
    out = run_cli("check-config", str(path))
    assert out.returncode == 1
    assert "auth.admin_key_sha256: the admin key is also a key of team 'search'" in out.stderr


def test_a_provider_type_without_its_extra_names_the_extra(tmp_path: Path) -> None:
    data = gateway_config({"cohere-a": "http://127.0.0.1:1"})
    data["providers"]["oracle"] = {"type": "oci", "compartment_id": "ocid1.x", "region": "r"}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data))
    # This interpreter has no OCI SDK: `import oci` fails as in a bare install.
    script = (
        "import sys; sys.modules['oci'] = None\n"
        "from gateway.cli.main import main\n"
        f"sys.exit(main(['check-config', {str(path)!r}]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert (
        "providers.oracle.type: provider type oci needs its SDK (oci is not installed): "
        "pip install 'rerank-gateway[oci]' (or [all])"
    ) in out.stderr
    # Serving without that provider does not import it at all.
    check = (
        "import sys, gateway.app; sys.exit(any(m in sys.modules for m in "
        "('oci', 'botocore', 'onnxruntime', 'tokenizers', 'providers.google_auth')))"
    )
    assert subprocess.run([sys.executable, "-c", check], cwd=ROOT, timeout=60).returncode == 0


@pytest.mark.parametrize(
    ("settings", "module"),
    [
        ({"type": "onnx", "model_dir": "."}, "onnxruntime"),
        ({"type": "vertex", "project": "p"}, "cryptography"),
    ],
)
def test_the_newer_extras_are_named_too(
    tmp_path: Path, settings: dict[str, str], module: str
) -> None:
    data = gateway_config({"cohere-a": "http://127.0.0.1:1"})
    data["providers"]["extra"] = settings
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data))
    script = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from gateway.cli.main import main\n"
        f"sys.exit(main(['check-config', {str(path)!r}]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    extra = settings["type"]
    assert f"providers.extra.type: provider type {extra} needs its SDK ({module}" in out.stderr
    assert f"pip install 'rerank-gateway[{extra}]' (or [all])" in out.stderr


def test_usage_reads_no_provider_secret(tmp_path: Path) -> None:
    data = gateway_config({"cohere-a": "http://127.0.0.1:1"}, state={"redis_url": REDIS_URL})
    data["providers"]["cohere-a"]["api_key"] = "${COHERE_KEY_THAT_IS_NOT_SET}"
    data["limits"] = {"redis_prefix": f"rg-test-usage-{time.time_ns()}:"}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data))
    out = run_cli("usage", "--config", str(path))
    assert out.returncode == 0, out.stderr
    assert "(no usage recorded in this period)" in out.stdout
    # check-config reads everything, and reports the missing variable as a problem.
    out = run_cli("check-config", str(path))
    assert out.returncode == 1
    assert (
        "providers.cohere-a.api_key: environment variable COHERE_KEY_THAT_IS_NOT_SET is not set"
        in out.stderr
    )


def test_credential_status_of_the_newer_types(tmp_path: Path) -> None:
    from gateway.cli.startup import credential_status
    from gateway.config import parse_config
    from tests.support.onnx_model import build_cross_encoder

    providers = {
        "az-key": {"type": "azure_semantic", "endpoint": "https://x.example", "api_key": "k"},
        "az-entra": {
            "type": "azure_semantic",
            "endpoint": "https://x.example",
            "auth": "entra",
            "tenant_id": "t",
            "client_id": "c",
            "client_secret": "s",
        },
        "gcp-file": {"type": "vertex", "project": "p", "credentials_file": "/k.json"},
        "gcp-env": {"type": "vertex", "project": "p"},
        "cross": {"type": "onnx", "model_dir": str(build_cross_encoder(tmp_path))},
    }
    data = {
        "auth": {"mode": "none"},
        "providers": providers,
        "models": {name: {"deployments": [{"provider": name, "model": "m"}]} for name in providers},
    }
    assert credential_status(parse_config(data, {})) == {
        "az-key": "azure_semantic: credentials set",
        "az-entra": "azure_semantic: credentials set",
        "gcp-file": "vertex: credentials set",
        "gcp-env": "vertex: ambient (GOOGLE_APPLICATION_CREDENTIALS)",
        "cross": "onnx: none needed",
    }


def test_oauth_tokens_over_plain_http_are_warned_about_too() -> None:
    from gateway.config import parse_config
    from gateway.config.advice import plain_http_warnings

    providers = {
        "gcp": {"type": "vertex", "project": "p", "base_url": "http://rank.internal"},
        "az": {
            "type": "azure_semantic",
            "endpoint": "http://az.internal",
            "auth": "entra",
            "tenant_id": "t",
            "client_id": "c",
            "client_secret": "s",
        },
    }
    data = {
        "auth": {"mode": "none"},
        "providers": providers,
        "models": {n: {"deployments": [{"provider": n, "model": "m"}]} for n in providers},
    }
    warnings = plain_http_warnings(parse_config(data, {}))
    assert [w.split(" over ")[0] for w in warnings] == [
        "providers.gcp sends OAuth access tokens (a service account's)",
        "providers.az sends Entra ID access tokens",
    ]
