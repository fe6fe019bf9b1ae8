"""Helpers shared by the tests (servers, processes, Redis and PostgreSQL, raw HTTP,
configs); fixtures are in the conftest.py files, fakes of upstreams in tests/fakes/."""
