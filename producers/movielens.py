"""``interest convert movielens DIR``: a MovieLens directory as ``events.jsonl`` + ``catalog.jsonl``.

Layouts understood:

- ml-latest / ml-latest-small: ``ratings.csv``, ``movies.csv``, ``tags.csv`` (optional);
- ml-100k: ``u.data`` (tab-separated user, item, rating, unix time) and ``u.item``
  (pipe-separated, latin-1, 19 genre flags named by ``u.genre`` when present);
- ml-1m: ``ratings.dat`` and ``movies.dat`` (``::``-separated, latin-1).

Ids are stable: user ``u<userId>``, item ``m<movieId>``, event ``ml-r-<row>`` for the
row-th rating and ``ml-t-<row>`` for the row-th tag (rows counted from 1, header
excluded). A rating becomes a ``rate`` event, a tag application a ``review`` event
carrying the tag text, a movie a catalog item (category: first genre; tags: all
genres). Events are written sorted by time (stable: ties keep ratings-then-tags file
order). Malformed rows are counted and skipped, never fatal.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

from interest_core.settings import Settings
from producers.jsonl import write_jsonl

__all__ = [
    "ML100K_GENRES",
    "ConvertSummary",
    "MovieLensError",
    "configure",
    "convert_movielens",
    "detect_layout",
    "run",
]

log = logging.getLogger(__name__)

#: Genre names of the 19 flags in ml-100k's u.item, in order (as in its u.genre).
ML100K_GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
_NO_GENRE = {"(no genres listed)", "unknown", ""}
_YEAR = re.compile(r"\((\d{4})\)\s*$")


class MovieLensError(ValueError):
    """The directory is not a MovieLens dataset this converter knows."""


@dataclass
class ConvertSummary:
    """What a conversion wrote; ``skipped`` counts malformed rows by file and reason."""

    layout: str
    events_path: Path
    catalog_path: Path
    events_by_type: Counter[str] = field(default_factory=Counter)
    items: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def events(self) -> int:
        return sum(self.events_by_type.values())

    def report(self) -> str:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.events_by_type.items()))
        out = [
            f"MovieLens ({self.layout}) converted:",
            f"  {self.events_path}: {self.events} events ({kinds})",
            f"  {self.catalog_path}: {self.items} catalog items",
        ]
        out.extend(f"  skipped {n} rows: {why}" for why, n in sorted(self.skipped.items()))
        return "\n".join(out)


def detect_layout(directory: Path) -> str:
    """``latest``, ``100k`` or ``1m``, from the files present; :class:`MovieLensError` if none."""
    if (directory / "ratings.csv").is_file() and (directory / "movies.csv").is_file():
        return "latest"
    if (directory / "u.data").is_file() and (directory / "u.item").is_file():
        return "100k"
    if (directory / "ratings.dat").is_file() and (directory / "movies.dat").is_file():
        return "1m"
    raise MovieLensError(
        f"{directory} holds no MovieLens dataset (expected ratings.csv + movies.csv, "
        "u.data + u.item, or ratings.dat + movies.dat)"
    )


# --------------------------------------------------------------------------- records


def _rate(row: int, user: str, movie: str, rating: str, ts: str) -> dict[str, Any]:
    value = float(rating)
    if not 0.0 <= value <= 5.0:
        raise ValueError(f"rating {rating!r} outside [0, 5]")
    return {
        "event_id": f"ml-r-{row}",
        "user_id": f"u{int(user)}",
        "ts": int(ts),
        "type": "rate",
        "item_id": f"m{int(movie)}",
        "rating": value,
    }


def _review(row: int, user: str, movie: str, tag: str, ts: str) -> dict[str, Any]:
    text = tag.strip()
    if not text:
        raise ValueError("empty tag")
    return {
        "event_id": f"ml-t-{row}",
        "user_id": f"u{int(user)}",
        "ts": int(ts),
        "type": "review",
        "item_id": f"m{int(movie)}",
        "text": text,
    }


def _item(movie: str, title: str, genres: list[str]) -> dict[str, Any]:
    title = title.strip()
    if not title:
        raise ValueError("empty title")
    kept = [g.strip() for g in genres if g.strip() not in _NO_GENRE]
    year = _YEAR.search(title)
    if kept:
        listed = ", ".join(g.lower() for g in kept)
        description = f"A {year.group(1)} film: {listed}." if year else f"A film: {listed}."
    else:
        description = f"A film from {year.group(1)}." if year else ""
    return {
        "item_id": f"m{int(movie)}",
        "title": title,
        "description": description,
        "category": kept[0] if kept else "",
        "tags": kept,
    }


# --------------------------------------------------------------------------- readers


def _csv_rows(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, list[str]]]:
    """Data rows of a CSV file with a header, numbered from 1."""
    with open(path, encoding=encoding, newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        yield from enumerate(reader, start=1)


def _split_rows(
    path: Path, separator: str, encoding: str = "utf-8"
) -> Iterator[tuple[int, list[str]]]:
    """Rows of a header-less file split on ``separator``, numbered from 1."""
    with open(path, encoding=encoding, newline="") as handle:
        for row, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield row, line.split(separator)


def _collect(
    rows: Iterator[tuple[int, list[str]]],
    width: int,
    build: Any,
    sink: list[dict[str, Any]],
    skipped: Counter[str],
    source: str,
) -> None:
    for row, cells in rows:
        if len(cells) < width:
            skipped[f"{source}: too few fields"] += 1
            continue
        try:
            sink.append(build(row, cells))
        except (ValueError, TypeError) as exc:
            skipped[f"{source}: {type(exc).__name__}"] += 1
            log.debug("%s row %d skipped: %s", source, row, exc)


def _read_latest(
    directory: Path, skipped: Counter[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    _collect(
        _csv_rows(directory / "ratings.csv"),
        4,
        lambda row, c: _rate(row, c[0], c[1], c[2], c[3]),
        events,
        skipped,
        "ratings.csv",
    )
    if (directory / "tags.csv").is_file():
        _collect(
            _csv_rows(directory / "tags.csv"),
            4,
            lambda row, c: _review(row, c[0], c[1], c[2], c[3]),
            events,
            skipped,
            "tags.csv",
        )
    items: list[dict[str, Any]] = []
    _collect(
        _csv_rows(directory / "movies.csv"),
        3,
        lambda _row, c: _item(c[0], c[1], c[2].split("|")),
        items,
        skipped,
        "movies.csv",
    )
    return events, items


def _read_100k(
    directory: Path, skipped: Counter[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    _collect(
        _split_rows(directory / "u.data", "\t"),
        4,
        lambda row, c: _rate(row, c[0], c[1], c[2], c[3]),
        events,
        skipped,
        "u.data",
    )
    genres = list(ML100K_GENRES)
    genre_file = directory / "u.genre"
    if genre_file.is_file():
        named = {}
        for _row, cells in _split_rows(genre_file, "|", "latin-1"):
            if len(cells) >= 2 and cells[1].strip().isdigit():
                named[int(cells[1])] = cells[0].strip()
        if named:
            genres = [named.get(i, ML100K_GENRES[i]) for i in range(len(ML100K_GENRES))]

    def build_item(_row: int, cells: list[str]) -> dict[str, Any]:
        flags = cells[5 : 5 + len(genres)]
        chosen = [genres[i] for i, flag in enumerate(flags) if flag.strip() == "1"]
        return _item(cells[0], cells[1], chosen)

    items: list[dict[str, Any]] = []
    _collect(
        _split_rows(directory / "u.item", "|", "latin-1"),
        5 + len(genres),
        build_item,
        items,
        skipped,
        "u.item",
    )
    return events, items


def _read_1m(
    directory: Path, skipped: Counter[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    _collect(
        _split_rows(directory / "ratings.dat", "::", "latin-1"),
        4,
        lambda row, c: _rate(row, c[0], c[1], c[2], c[3]),
        events,
        skipped,
        "ratings.dat",
    )
    items: list[dict[str, Any]] = []
    _collect(
        _split_rows(directory / "movies.dat", "::", "latin-1"),
        3,
        lambda _row, c: _item(c[0], c[1], c[2].split("|")),
        items,
        skipped,
        "movies.dat",
    )
    return events, items


_READERS = {"latest": _read_latest, "100k": _read_100k, "1m": _read_1m}


def convert_movielens(directory: str | Path, out_dir: str | Path) -> ConvertSummary:
    """Convert the MovieLens dataset in ``directory``; writes ``out_dir``/events.jsonl and catalog.jsonl.

    Raises :class:`MovieLensError` if ``directory`` holds no known layout and ``OSError``
    if a file cannot be read or written. Malformed rows are skipped and counted.
    """
    source = Path(directory)
    if not source.is_dir():
        raise MovieLensError(f"{source} is not a directory")
    layout = detect_layout(source)
    out = Path(out_dir)
    summary = ConvertSummary(layout, out / "events.jsonl", out / "catalog.jsonl")
    events, items = _READERS[layout](source, summary.skipped)
    events.sort(key=itemgetter("ts"))  # stable: equal times keep file order
    summary.events_by_type.update(e["type"] for e in events)
    write_jsonl(summary.events_path, events)
    summary.items = write_jsonl(summary.catalog_path, items)
    return summary


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=["movielens"], help="dataset kind")
    parser.add_argument("directory", metavar="DIR", help="the unpacked MovieLens directory")
    parser.add_argument(
        "--out",
        metavar="OUTDIR",
        default="data/movielens",
        help="where events.jsonl and catalog.jsonl go (default: data/movielens)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        summary = convert_movielens(args.directory, args.out)
    except MovieLensError as exc:
        print(f"interest convert: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"interest convert: {exc}", file=sys.stderr)
        return 1
    print(summary.report())
    return 0
