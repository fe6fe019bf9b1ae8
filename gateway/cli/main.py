"""`rerank-gateway`: serve, check-config, hash-key, usage, depth, keys, ledger."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Collection

from gateway.cli.startup import version
from gateway.config import Config, ConfigError, is_loopback, load_or_default
from gateway.config.advice import plain_http_warnings, scale_warnings
from gateway.http.auth import hash_key, new_key

# What `usage` reads: where the counters and the ledger are, and whose they are.
USAGE_SECTIONS = ("state", "limits", "teams", "auth", "ledger")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rerank-gateway", description="Cohere-compatible rerank gateway."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="YAML config file (default: the embedded default)")
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    serve.add_argument("--workers", type=int, help="worker processes (overrides server.workers)")
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("path", nargs="?")
    check.add_argument(
        "--schema", action="store_true", help="print the config's JSON Schema instead"
    )
    hk = sub.add_parser("hash-key", help="print the SHA-256 digest of a key, for the config")
    hk.add_argument("key", nargs="?", help="the key to hash")
    hk.add_argument("--new", action="store_true", help="make a fresh random key and print both")
    usage = sub.add_parser(
        "usage",
        help="print usage and cost per team, model and deployment (from the ledger or Redis)",
    )
    usage.add_argument("--config", required=True, help="the gateway's YAML config file")
    usage.add_argument("--team", help="only this team")
    usage.add_argument("--from", dest="start", help="first day, YYYY-MM-DD (default: the 1st)")
    usage.add_argument("--to", dest="end", help="last day, YYYY-MM-DD (default: today, UTC)")
    usage.add_argument("--month", help="a whole month, YYYY-MM (instead of --from/--to)")
    usage.add_argument(
        "--by", help="group rows by team, key, model, deployment (default: team,model,deployment)"
    )
    usage.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="output format"
    )
    usage.add_argument("--json", action="store_true", help="the same as --format json")
    depth = sub.add_parser(
        "depth", help="print the depth advice per team and model (from the shared Redis)"
    )
    depth.add_argument("--config", required=True, help="the gateway's YAML config file")
    depth.add_argument("--team", help="only this team")
    depth.add_argument("--json", action="store_true", help="print JSON instead of a table")
    from gateway.cli.keys import add_parser
    from gateway.cli.ledger import add_parser as add_ledger_parser

    add_parser(sub)
    add_ledger_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "hash-key":
        return _hash_key(args)
    if args.command == "check-config":
        return _schema() if args.schema else _check(args.path)
    if args.command == "usage":
        from gateway.cli.usage import run_usage

        # Only what the report needs: no provider section, so no upstream secret, is read.
        config = _load(args.config, sections=USAGE_SECTIONS)
        if config is None:
            return 1
        return run_usage(
            config,
            args.team,
            args.start,
            args.end,
            month=args.month,
            by=args.by,
            output="json" if args.json else args.format,
        )
    if args.command == "depth":
        from gateway.cli.depth import run_depth

        config = _load(args.config)  # with providers: prices and latency priors
        if config is None:
            return 1
        return run_depth(config, args.team, args.json)
    if args.command == "ledger":
        from gateway.cli.ledger import LEDGER_SECTIONS, run_ledger

        config = _load(args.config, sections=LEDGER_SECTIONS)
        if config is None:
            return 1
        return run_ledger(args, config)
    if args.command == "keys":
        from gateway.cli.keys import run_keys

        config = None
        if args.config:
            config = _load(args.config)
            if config is None:
                return 1
        return run_keys(args, config)
    return _serve(args)


def _load(path: str | None, sections: Collection[str] | None = None) -> Config | None:
    """The config at `path` (or the embedded default), or None after printing its problems."""
    try:
        return load_or_default(path, sections)
    except ConfigError as exc:
        print(f"{path or 'the embedded default'}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def _hash_key(args: argparse.Namespace) -> int:
    if args.new:
        key = new_key()
        print(f"key:        {key}\nkey_sha256: {hash_key(key)}")
        return 0
    if not args.key:
        print("hash-key: give a KEY, or --new to make one", file=sys.stderr)
        return 2
    print(hash_key(args.key))
    return 0


def _schema() -> int:
    from gateway.config.schema import config_schema

    print(json.dumps(config_schema(), indent=2))
    return 0


def _check(path: str | None) -> int:
    if path is None:
        print("check-config: give a config file, or --schema", file=sys.stderr)
        return 2
    config = _load(path)
    if config is None:
        return 1
    print(
        f"{path}: ok ({len(config.providers)} providers, {len(config.models)} models, "
        f"{len(config.teams)} teams)"
    )
    for warning in scale_warnings(config) + plain_http_warnings(config):
        print(f"  warning: {warning}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    workers = args.workers or config.server.workers
    if config.auth.mode == "none" and not is_loopback(host):
        print(
            f"rerank-gateway: auth.mode none is only allowed on a loopback address, not {host!r}",
            file=sys.stderr,
        )
        return 1
    from gateway.cli.server import serve

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return serve(args.config, host, port, workers)


if __name__ == "__main__":
    sys.exit(main())
