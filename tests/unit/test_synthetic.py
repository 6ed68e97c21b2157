"""The synthetic generator: determinism, validity, and tastes that drift as truth.jsonl says."""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from pathlib import Path

import orjson
import pytest

from interest_core.records import (
    EVENT_TYPES,
    CatalogItem,
    Event,
    Rejected,
    parse_catalog,
    parse_event,
)
from producers.jsonl import read_lines
from producers.synthetic import BAD_LINE_KINDS, generate, generate_dataset
from producers.synthetic_vocab import CATEGORIES

QUERIES = {query: vocab.name for vocab in CATEGORIES for query in vocab.queries}


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    return generate_dataset(users=60, items=240, events=6000, seed=7)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    options = {"users": 30, "items": 120, "events": 2000, "bad_fraction": 0.01}
    generate(tmp_path / "a", seed=3, **options)
    generate(tmp_path / "b", seed=3, **options)
    generate(tmp_path / "c", seed=4, **options)
    for name in ("catalog.jsonl", "events.jsonl", "truth.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "events.jsonl").read_bytes() != (
        tmp_path / "c" / "events.jsonl"
    ).read_bytes()


def test_catalog_is_valid_and_covers_every_category(data) -> None:  # type: ignore[no-untyped-def]
    items = [parse_catalog(None, orjson.dumps(row)) for row in data.catalog]
    assert all(isinstance(item, CatalogItem) for item in items)
    assert len({row["item_id"] for row in data.catalog}) == 240
    assert len({row["title"] for row in data.catalog}) == 240
    assert Counter(row["category"] for row in data.catalog) == {v.name: 20 for v in CATEGORIES}
    for row in data.catalog:
        assert row["description"].endswith(".") and len(row["description"].split()) >= 8
        assert row["image_caption"] and len(row["tags"]) == 3


def test_events_are_valid_time_ordered_and_mixed(data) -> None:  # type: ignore[no-untyped-def]
    events = [parse_event(orjson.dumps(row)) for row in data.events]
    assert all(isinstance(e, Event) for e in events)
    assert len(events) == 6000
    times = [e.ts for e in events]
    assert times == sorted(times)
    assert len({e.event_id for e in events}) == 6000
    kinds = Counter(e.type for e in events)
    assert set(kinds) == EVENT_TYPES - {"delete_user"}
    assert kinds["view"] > kinds["purchase"] > 0


def test_events_follow_the_truth(data) -> None:  # type: ignore[no-untyped-def]
    """Positives and texts are about the tastes in force; negatives are outside them."""
    category_of = {row["item_id"]: row["category"] for row in data.catalog}
    periods: dict[str, list[dict]] = {}
    for row in data.truth:
        periods.setdefault(row["user_id"], []).append(row)
    drifted = 0
    for user, rows in periods.items():
        assert rows[0]["from_ts"] <= min(e["ts"] for e in data.events if e["user_id"] == user)
        for before, after in itertools.pairwise(rows):
            assert before["to_ts"] == after["from_ts"]
            gained = set(after["tastes"]) - set(before["tastes"])
            assert len(gained) == 1 and after["tastes"][0] in gained  # the new taste leads
            assert not gained & {t for r in rows[: rows.index(after)] for t in r["tastes"]}
            drifted += 1
    assert drifted >= len(periods) // 2

    checked = Counter()
    for event in data.events:
        rows = periods[event["user_id"]]
        starts = [row["from_ts"] for row in rows]
        tastes = set(rows[bisect.bisect_right(starts, event["ts"]) - 1]["tastes"])
        if event["type"] in ("skip", "dislike"):
            assert category_of[event["item_id"]] not in tastes
        elif event["type"] == "search":
            query = max((q for q in QUERIES if event["text"].startswith(q)), key=len)
            assert QUERIES[query] in tastes
        elif "item_id" in event:
            assert category_of[event["item_id"]] in tastes
        checked[event["type"]] += 1
    assert checked["skip"] and checked["search"] and checked["purchase"]


def test_bad_lines_are_rejected_with_their_reasons(tmp_path: Path) -> None:
    summary = generate(tmp_path, users=20, items=60, events=1000, seed=1, bad_fraction=0.05)
    assert summary.bad_lines == 50 and summary.events == 1000
    reasons = Counter()
    valid = 0
    for _, line in read_lines(tmp_path / "events.jsonl"):
        parsed = parse_event(line, fallback_id="x")
        if isinstance(parsed, Rejected):
            reasons[parsed.reason] += 1
        else:
            valid += 1
    assert valid == 1000
    assert set(reasons) == {
        "not_json",
        "missing_field:user_id",
        "bad_type:ts",
        "unknown_event_type",
        "text_too_long",
        "bad_value:rating",
        "not_object",
    }
    assert sum(reasons.values()) == 50 and len(BAD_LINE_KINDS) == len(reasons)


@pytest.mark.parametrize(
    "options",
    [{"items": 5}, {"users": 0}, {"bad_fraction": 1.5}, {"tastes": 0}, {"tastes": 12}],
)
def test_impossible_arguments(options: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError):
        generate_dataset(**options)


def test_cli_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from consumers.cli import main

    argv = ["generate", "--users", "5", "--items", "24", "--events", "100", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert "100 events of 5 users" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "catalog.jsonl",
        "events.jsonl",
        "truth.jsonl",
    ]
    assert main([*argv[:-2], "--items", "3"]) == 2
