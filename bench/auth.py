"""`python -m bench.auth`: what resolving a caller's key costs per request, in process.

Compares a key from the config with no API keys loaded (as before API keys existed), the
same key with 5,000 API keys loaded, and an API key among those 5,000. No Redis is
involved: the hot path reads this replica's snapshot only.
"""

from __future__ import annotations

import timeit

from gateway.config import parse_config
from gateway.http.auth import Authenticator, hash_key
from policies.access.api_keys import KeyDirectory, KeyRecord, digest_of, new_api_key

TEAMS = 50
API_KEYS = 5_000
CALLS = 200_000


def main() -> None:
    data = {
        "auth": {"mode": "keys", "admin_key_sha256": hash_key("admin")},
        "teams": {f"t{i}": {"key_sha256": [hash_key(f"team-{i}")]} for i in range(TEAMS)},
        "providers": {"local": {"type": "local"}},
        "models": {"local-bm25": {"deployments": [{"provider": "local"}]}},
    }
    config = parse_config(data, {})
    directory = KeyDirectory()
    records, keys = [], []
    for i in range(API_KEYS):
        key_id, key = new_api_key()
        keys.append(key)
        records.append(
            KeyRecord(id=key_id, team=f"t{i % TEAMS}", digest=digest_of(key), created=0.0)
        )
    directory.replace_all(records, 1)
    loaded = Authenticator(config, directory)
    cases = (
        ("config key, no API keys", Authenticator(config, None), "Bearer team-7"),
        (f"config key, {API_KEYS} API keys loaded", loaded, "Bearer team-7"),
        (f"API key, {API_KEYS} loaded", loaded, f"Bearer {keys[API_KEYS // 2]}"),
    )
    for label, auth, header in cases:
        best = min(timeit.repeat(lambda a=auth, h=header: a.caller(h), number=CALLS, repeat=5))
        print(f"{label:40s} {best / CALLS * 1e6:6.2f} us per request")


if __name__ == "__main__":
    main()
