"""The recommendation strategies and the fused features each one uses (one definition).

Strategies switch sources and features on the same code paths:

========  ==========================================  =================================
strategy  candidate sources                           fused features
========  ==========================================  =================================
popular   trending                                    trending
itemknn   co-occurrence                               co-occurrence
static    one long-term content vector (no decay)     long-term cosine
dynamic   slots + short-term + decayed long-term      slot, short-term, long-term cosine
hybrid    all of the above                            all eight, weights learned online
========  ==========================================  =================================

The content strategies score in the adaptation layer's space when one is in use
(:mod:`interest_core.adapter`). The hybrid keeps its three content cosines in the
encoder's raw space and adds ``adapted``, the best cosine in the layer's space (0 while
the layer is the identity; initial weight 0, so an untrained hybrid ranks exactly as
without the layer): the fusion learns how much the layer adds to the raw content,
co-occurrence and popularity evidence instead of losing the raw content (which new
items need) to it. The hybrid also weighs ``cooccurrence_popular``, the co-occurrence
score without the cosine's discount of the candidate's own popularity (see
:meth:`interest_core.ranking.Ranker.feature_matrix`): ``itemknn`` ranks by the cosine
alone. Every list is topped up from trending when its sources give fewer than ``k`` items, so a
new user (no history) gets the popular items.
"""

from __future__ import annotations

__all__ = ["CONTENT_FEATURES", "FEATURES", "STRATEGIES", "features_of"]

#: The fused features, in the order of the fusion weights' columns.
FEATURES: tuple[str, ...] = (
    "slot",
    "short_term",
    "long_term",
    "cooccurrence",
    "trending",
    "popularity",
    "adapted",
    "cooccurrence_popular",
)
#: The features scored from the user's content vectors (the item index's part).
CONTENT_FEATURES: tuple[str, ...] = ("slot", "short_term", "long_term")
#: The strategies ``interest eval`` compares and the worker can run.
STRATEGIES: tuple[str, ...] = ("popular", "itemknn", "static", "dynamic", "hybrid")

_STRATEGY_FEATURES: dict[str, tuple[str, ...]] = {
    "popular": ("trending",),
    "itemknn": ("cooccurrence",),
    "static": ("long_term",),
    "dynamic": CONTENT_FEATURES,
    "hybrid": FEATURES,
}


def features_of(strategy: str) -> tuple[str, ...]:
    """The features ``strategy`` fuses; raises ``ValueError`` for an unknown strategy."""
    if strategy not in _STRATEGY_FEATURES:
        raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    return _STRATEGY_FEATURES[strategy]
