"""MovieLens conversion: the real ml-latest-small data and a tiny ml-100k fixture."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from interest_core.records import CatalogItem, Event, parse_catalog, parse_event
from producers.jsonl import read_lines
from producers.movielens import MovieLensError, convert_movielens, detect_layout
from tests.data_paths import MOVIELENS_SMALL, needs_movielens

SMALL = MOVIELENS_SMALL


def events_of(path: Path) -> list[Event]:
    out = []
    for line_no, line in read_lines(path):
        parsed = parse_event(line)
        assert isinstance(parsed, Event), (line_no, parsed)
        out.append(parsed)
    return out


@needs_movielens
def test_movielens_small_counts_and_records(tmp_path: Path) -> None:
    summary = convert_movielens(SMALL, tmp_path)
    assert summary.layout == "latest"
    assert summary.events_by_type == {"rate": 100_004, "review": 1_296}
    assert summary.items == 9_125 and not summary.skipped

    events = events_of(tmp_path / "events.jsonl")
    assert len(events) == 101_300
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    assert len({e.event_id for e in events}) == len(events)
    first_rating = next(e for e in events if e.event_id == "ml-r-1")
    # ratings.csv row 1: 1,31,2.5,1260759144
    assert (first_rating.user_id, first_rating.item_id, first_rating.rating, first_rating.ts) == (
        "u1",
        "m31",
        2.5,
        1260759144.0,
    )
    first_tag = next(e for e in events if e.event_id == "ml-t-1")
    # tags.csv row 1: 15,339,sandra 'boring' bullock,1138537770
    assert (first_tag.type, first_tag.user_id, first_tag.item_id, first_tag.text) == (
        "review",
        "u15",
        "m339",
        "sandra 'boring' bullock",
    )

    items = {}
    for line_no, line in read_lines(tmp_path / "catalog.jsonl"):
        item = parse_catalog(None, line)
        assert isinstance(item, CatalogItem), (line_no, item)
        items[item.item_id] = item
    assert len(items) == 9_125
    toy_story = items["m1"]
    assert toy_story.title == "Toy Story (1995)"
    assert toy_story.category == "Adventure"
    assert toy_story.tags == ("Adventure", "Animation", "Children", "Comedy", "Fantasy")
    assert {e.item_id for e in events} <= set(items)


def test_conversion_is_stable(tmp_path: Path) -> None:
    source = write_100k(tmp_path / "ml-100k")
    convert_movielens(source, tmp_path / "a")
    convert_movielens(source, tmp_path / "b")
    for name in ("events.jsonl", "catalog.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def write_100k(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "u.data").write_text(
        "196\t242\t3\t881250949\n"
        "186\t302\t3\t891717742\n"
        "22\t377\t1\t878887116\n"
        "196\t302\t5\t881250949\n"
        "bad line\n"
        "244\t51\t9\t880606923\n"
    )
    flags_242 = ["0"] * 19
    flags_242[5] = "1"  # Comedy
    flags_302 = ["0"] * 19
    flags_302[6], flags_302[8], flags_302[16] = "1", "1", "1"  # Crime, Drama, Thriller
    flags_377 = ["0"] * 19
    flags_377[0] = "1"  # unknown
    rows = [
        "242|Kolya (1996)|24-Jan-1997||http://x|" + "|".join(flags_242),
        "302|L.A. Confidential (1997)|01-Jan-1997||http://x|" + "|".join(flags_302),
        "377|Heavyweights (1994)|01-Jan-1994||http://x|" + "|".join(flags_377),
        "51|Légendes d'automne (1994)|01-Jan-1994||http://x|" + "|".join(flags_242),
    ]
    (directory / "u.item").write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    return directory


def test_movielens_100k_layout(tmp_path: Path) -> None:
    source = write_100k(tmp_path / "ml-100k")
    assert detect_layout(source) == "100k"
    summary = convert_movielens(source, tmp_path / "out")
    assert summary.events_by_type == {"rate": 4}
    # one row with too few fields, one rating of 9 outside [0, 5]
    assert sum(summary.skipped.values()) == 2
    events = events_of(tmp_path / "out" / "events.jsonl")
    assert [e.event_id for e in events] == ["ml-r-3", "ml-r-1", "ml-r-4", "ml-r-2"]
    assert events[1].user_id == "u196" and events[1].item_id == "m242" and events[1].rating == 3.0
    lines = [orjson.loads(line) for _, line in read_lines(tmp_path / "out" / "catalog.jsonl")]
    by_id = {row["item_id"]: row for row in lines}
    assert by_id["m242"]["category"] == "Comedy"
    assert by_id["m302"]["category"] == "Crime"
    assert by_id["m302"]["tags"] == ["Crime", "Drama", "Thriller"]
    assert by_id["m377"]["category"] == "" and by_id["m377"]["tags"] == []
    assert by_id["m51"]["title"] == "Légendes d'automne (1994)"  # latin-1 decoded


def test_not_a_movielens_directory(tmp_path: Path) -> None:
    with pytest.raises(MovieLensError):
        convert_movielens(tmp_path, tmp_path / "out")
    with pytest.raises(MovieLensError):
        convert_movielens(tmp_path / "missing", tmp_path / "out")


def test_cli_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from consumers.cli import main

    source = write_100k(tmp_path / "ml-100k")
    assert main(["convert", "movielens", str(source), "--out", str(tmp_path / "o")]) == 0
    assert "4 events" in capsys.readouterr().out
    assert main(["convert", "movielens", str(tmp_path / "nothing")]) == 2
