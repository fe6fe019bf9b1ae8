"""The cost-governance tests share tests/conftest.py's fixtures (`redis_prefix`,
`own_redis`); helpers (fake clock, HTTP calls) are in tests/governance/helpers.py."""
