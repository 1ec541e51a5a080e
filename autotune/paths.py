"""Where this checkout lives: trial processes put it on their path, whichever interpreter runs
them, and the sensitivity cache key hashes source files under it."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
