"""Where the tests find the shared data set.

CI lays the project out as a checkout with ``../shared`` beside it, so the data lives at
``<checkout>/../shared/data``; ``$INTEREST_SHARED_DATA`` points elsewhere. Outside CI a
missing data set skips the tests that need it, with the reason shown (``-ra``); under
CI (``CI`` set) they run and fail, so a missing data set is never silently skipped there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["MOVIELENS_SMALL", "SHARED_DATA", "needs_movielens"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("INTEREST_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
MOVIELENS_SMALL = SHARED_DATA / "movielens-small"

needs_movielens = pytest.mark.skipif(
    not MOVIELENS_SMALL.is_dir() and not os.environ.get("CI"),
    reason=f"MovieLens small not found at {MOVIELENS_SMALL} (set INTEREST_SHARED_DATA)",
)
