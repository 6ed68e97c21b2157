"""The fusion weights learned from the whole fleet's feedback, durable as a parameter.

A worker does not step its own fusion weights when it runs with shared item knowledge:
it sends the listwise gradient of each lesson
(:meth:`~interest_core.fusion.FusionWeights.listwise_gradient`) as
:class:`~interest_core.item_signals.FusionFeedback`, and one learner, the aggregator that
owns the fusion key's partition, applies every lesson of every worker once
(watermarks by events partition, as for item knowledge) and publishes the weights as the
versioned parameter :data:`FUSION_PARAM` on ``interest.models``. The record's ``meta``
holds what the learner needs to resume exactly: the iterate, the number of updates and
the watermarks; workers read only the values (the averaged weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from interest_core.fusion import FusionWeights
from interest_core.item_signals import FusionFeedback
from interest_core.params import ParamRecord, ParamSpec, encode_params
from interest_core.settings import RecommendSettings

__all__ = ["FUSION_PARAM", "SharedFusion", "fusion_spec"]

#: Name of the fusion weights on the models topic.
FUSION_PARAM = "fusion.weights"


def fusion_spec(features: Sequence[str]) -> ParamSpec:
    """What a consumer expects of the fusion weights: one value per feature, any model."""
    return ParamSpec(FUSION_PARAM, (len(features),), None)


class SharedFusion:
    """The fleet's fusion learner over ``features`` (a :class:`FusionWeights` inside).

    Applies each :class:`FusionFeedback` at most once (per events partition, offsets
    only grow), and turns its state into a :class:`ParamRecord` and back.
    """

    def __init__(
        self,
        features: Sequence[str],
        *,
        learning_rate: float = RecommendSettings.fusion_learning_rate,
        averaging: float = 0.01,
        initial: Sequence[float] | None = None,
    ) -> None:
        self.features = tuple(features)
        self.fusion = FusionWeights(
            self.features, learning_rate=learning_rate, averaging=averaging, initial=initial
        )
        self.watermarks: dict[int, int] = {}
        self.version = 0
        self.dirty = False
        self.duplicates = 0

    def apply(self, feedback: FusionFeedback) -> bool:
        """Take one lesson's gradient; False when it was already applied (a replay) or
        has the wrong width."""
        if self.watermarks.get(feedback.partition, -1) >= feedback.offset:
            self.duplicates += 1
            return False
        if len(feedback.gradient) != len(self.features):
            return False
        self.watermarks[feedback.partition] = feedback.offset
        self.fusion.apply_gradient(np.asarray(feedback.gradient, dtype=np.float64))
        self.dirty = True
        return True

    def to_param(self, created_at: float) -> ParamRecord:
        """The next version of :data:`FUSION_PARAM` (values: the averaged weights)."""
        self.version += 1
        self.dirty = False
        return encode_params(
            FUSION_PARAM,
            self.fusion.weights,
            version=self.version,
            created_at=created_at,
            dtype="float64",
            meta={
                "features": list(self.features),
                "iterate": [float(x) for x in self.fusion.iterate],
                "updates": self.fusion.updates,
                "watermarks": {str(p): o for p, o in sorted(self.watermarks.items())},
            },
        )

    def restore(self, record: ParamRecord) -> bool:
        """Resume from a published version; False (nothing changed) when its features or
        meta do not fit this learner."""
        meta = record.meta
        if list(meta.get("features", [])) != list(self.features):
            return False
        iterate = meta.get("iterate")
        marks = meta.get("watermarks", {})
        updates = meta.get("updates", 0)
        try:
            watermarks = {int(p): int(o) for p, o in dict(marks).items()}
            iterate_array = None if iterate is None else np.asarray(iterate, dtype=np.float64)
            if iterate_array is not None and not np.isfinite(iterate_array).all():
                return False
            self.fusion.load(
                np.asarray(record.values, dtype=np.float64), iterate_array, int(updates)
            )
        except (TypeError, ValueError):
            return False
        self.watermarks = watermarks
        self.version = record.version
        self.dirty = False
        return True
