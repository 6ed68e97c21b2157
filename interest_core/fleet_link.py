"""An engine's link to the fleet's item-keyed stage.

Workers are keyed by user; what their events teach about items goes to one item-keyed
stage and comes back as the fleet's knowledge (see :mod:`interest_core.item_signals`,
:mod:`interest_core.item_knowledge`, :mod:`interest_core.item_view`). :class:`FleetLink`
holds the engine's side of that loop: the outbox of item signals and fusion lessons its
applied events produce, the view that lays the fleet's item records over the engine's own
counts, and the engine's own fusion lessons, re-applied over the fleet's fusion weights.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np

from interest_core.catalog import Catalog
from interest_core.fusion import FusionWeights
from interest_core.item_knowledge import ItemRecord
from interest_core.item_signals import FusionFeedback, OwnSignals, SignalBuffer
from interest_core.item_view import KnowledgeView, Laid
from interest_core.knowledge import PAIR_DECAY_PER_ITEM, ItemKnowledge
from interest_core.params import ParamRecord
from interest_core.records import Event

__all__ = ["OWN_LESSONS_KEPT", "FleetLink"]

OWN_LESSONS_KEPT = 50_000  # own fusion lessons re-applied over the fleet's weights


class FleetLink:
    """The item signals out, the fleet's item knowledge and fusion weights in.

    ``catalog`` names rows; ``knowledge`` holds the counts the fleet's records replace;
    ``fusion`` gets the fleet's weights; with ``emit`` the applied events' signals and
    lessons are recorded in :attr:`outbox` (otherwise it is None and nothing is recorded).
    """

    def __init__(
        self, catalog: Catalog, knowledge: ItemKnowledge, fusion: FusionWeights, *, emit: bool
    ) -> None:
        self.catalog = catalog
        self.fusion = fusion
        # The fleet's item knowledge (interest.items) replaces rows of these counts as it
        # arrives; the engine's own newer events are journalled and applied on top.
        self.view = KnowledgeView(
            catalog.row_of,  # live items only; the dict is never replaced
            knowledge.cooccurrence,
            knowledge.trending,
            knowledge.popularity,
        )
        #: With ``emit``: the item signals and fusion lessons of applied events (see
        #: :mod:`interest_core.item_signals`), drained by the worker.
        self.outbox = SignalBuffer(PAIR_DECAY_PER_ITEM, catalog.item_ids) if emit else None
        self.own_lessons: deque[FusionFeedback] = deque(maxlen=OWN_LESSONS_KEPT)
        # How many of the outbox's signals are journalled in the view so far: the
        # journal takes them a batch at a time, before any record could need them.
        self._journalled = 0

    def source(self, event: Event) -> tuple[int, int]:
        """The event's ``(partition, offset)`` as its signals name it; (0, 0) without
        an outbox."""
        if self.outbox is None:
            return (0, 0)
        return self.outbox.source(event.partition, event.offset)

    def lesson(self, gradient: np.ndarray | None, source: tuple[int, int]) -> None:
        """Record a fusion lesson (the listwise gradient) of the event ``source``."""
        if gradient is not None and self.outbox is not None:
            self.own_lessons.append(self.outbox.lesson(gradient, source))

    def positive(
        self, row: int, history: Sequence[int], *, weight: float, ts: float, source: tuple[int, int]
    ) -> None:
        """Record the signals of a positive event on the item at catalog ``row`` after the
        user's positive ``history`` (distinct rows, newest first, as
        :func:`~interest_core.history.recent_history` gives them), ``weight`` at event
        time ``ts`` (unix seconds). They are journalled in the view (so that the fleet's
        older records do not hide them) before any record is applied (:meth:`journal`)."""
        if self.outbox is None:
            return
        # Distinct rows name distinct items: only the event's own item is left out (what
        # event_signal's general filter would do); the rows are kept, named only if read.
        others = [other for other in history if other != row] if row in history else history
        self.outbox.positive_rows(row, others, weight=weight, ts=ts, source=source)

    def journal(self) -> None:
        """Journal in the view the outbox's signals recorded since the last call (one
        chunk: see :class:`~interest_core.signal_journal.SignalJournal`)."""
        if self.outbox is None:
            return
        signals = self.outbox.signals
        done = self._journalled
        if len(signals) == done:
            return
        tail = signals.since(done)
        if tail.own_rows is not None:
            self.view.own(tail, tail.own_rows, tail.pair_rows)
        else:  # some signal came without rows: the journal looks them up
            self.view.own(tail)
        self._journalled = len(signals)

    def take(self) -> tuple[OwnSignals, list[FusionFeedback]]:
        """The own-item signals (one per positive event: see
        :class:`~interest_core.item_signals.SignalBuffer`) and fusion lessons recorded
        since the last call."""
        if self.outbox is None:
            return (OwnSignals(), [])
        self.journal()
        self._journalled = 0
        return self.outbox.take()

    def apply(self, records: Sequence[ItemRecord], laid: Sequence[Laid | None] | None) -> int:
        """Lay the fleet's item ``records`` (optionally already ``laid`` on rows) over the
        engine's counts, its own signals on top; how many were applied."""
        self.journal()
        return self.view.apply_many(records, laid)

    def drop(self, item_ids: Iterable[str]) -> None:
        """Remove these items' fleet knowledge from the view."""
        self.journal()
        self.view.remove_many(list(item_ids))

    def remap(self, item_ids: Iterable[str]) -> None:
        """The catalog gave these items rows: lay the records naming them again."""
        self.journal()
        self.view.remap(item_ids)

    def load_fusion(self, record: ParamRecord) -> bool:
        """Rank with the fleet's fusion weights, then re-apply the own lessons the record
        does not cover yet (by its watermarks). False when it does not fit."""
        values = np.asarray(record.values, dtype=np.float64)
        meta = record.meta
        try:
            iterate = np.asarray(meta.get("iterate", values), dtype=np.float64)
            updates = int(meta.get("updates", 0))
            marks = {int(p): int(o) for p, o in dict(meta.get("watermarks", {})).items()}
            if not np.isfinite(iterate).all():
                raise ValueError("non-finite iterate")
            self.fusion.load(values, iterate, updates)
        except (TypeError, ValueError):
            return False
        pending = [
            lesson for lesson in self.own_lessons if lesson.offset > marks.get(lesson.partition, -1)
        ]
        self.own_lessons = deque(pending, maxlen=self.own_lessons.maxlen)
        for lesson in pending:
            self.fusion.apply_gradient(np.asarray(lesson.gradient, dtype=np.float64))
        return True
