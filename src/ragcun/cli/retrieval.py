"""`ragcun` commands for this area (filled in by its issue)."""

from __future__ import annotations

from ragcun.cli.app import app  # noqa: F401
