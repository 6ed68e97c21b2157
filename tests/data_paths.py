"""Where the tests find the shared data set.

CI lays the project out as a checkout with ``../shared`` beside it, so the data lives at
``<checkout>/../shared/data``; ``$INTEREST_SHARED_DATA`` points elsewhere. Outside CI a
missing data set skips the tests that need it, with the reason shown (``-ra``); under
CI (``CI`` set) they run and fail, so a missing data set is never silently skipped there.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import pytest

__all__ = ["MOVIELENS_SMALL", "SHARED_DATA", "movielens_log", "needs_movielens"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("INTEREST_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
MOVIELENS_SMALL = SHARED_DATA / "movielens-small"

needs_movielens = pytest.mark.skipif(
    not MOVIELENS_SMALL.is_dir() and not os.environ.get("CI"),
    reason=f"MovieLens small not found at {MOVIELENS_SMALL} (set INTEREST_SHARED_DATA)",
)


def movielens_log(users: int = 12, per_user: int = 12) -> tuple[list[dict], list[dict]]:
    """(catalog records, events) for the first ``users`` users' first ratings, in time order.

    Ratings become view / click / purchase / rate / dislike by value, and every user also
    searches once for the genre of a movie they rated, so text goes through the encoder.
    """
    movies = {}
    with (MOVIELENS_SMALL / "movies.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            movies[row["movieId"]] = row
    events: list[dict] = []
    taken: Counter[str] = Counter()
    used: set[str] = set()
    with (MOVIELENS_SMALL / "ratings.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            user = row["userId"]
            if int(user) > users or taken[user] >= per_user:
                continue
            taken[user] += 1
            rating, movie = float(row["rating"]), row["movieId"]
            used.add(movie)
            kind = (
                "purchase"
                if rating >= 4.5
                else "click"
                if rating >= 4
                else "view"
                if rating >= 3
                else "rate"
                if rating >= 2
                else "dislike"
            )
            event = {
                "event_id": f"e{len(events)}",
                "user_id": f"u{user}",
                "ts": float(row["timestamp"]),
                "type": kind,
                "item_id": f"m{movie}",
            }
            if kind == "rate":
                event["rating"] = rating
            events.append(event)
            if taken[user] == 3:
                genre = movies[movie]["genres"].split("|")[0]
                events.append(
                    {
                        "event_id": f"e{len(events)}",
                        "user_id": f"u{user}",
                        "ts": float(row["timestamp"]) + 1,
                        "type": "search",
                        "text": f"{genre.lower()} movies like {movies[movie]['title']}",
                    }
                )
    catalog = [
        {
            "item_id": f"m{m}",
            "title": movies[m]["title"],
            "category": movies[m]["genres"].split("|")[0],
            "tags": movies[m]["genres"].split("|"),
        }
        for m in sorted(used, key=int)
    ]
    events.sort(key=lambda e: e["ts"])
    return catalog, events
