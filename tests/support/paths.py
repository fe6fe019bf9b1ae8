"""Where things are: the repository root (the cwd of gateway subprocesses, and where
the docs, the chart and the Dockerfile are read from), for tests at any depth."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
