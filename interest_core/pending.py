"""Interest updates queued per user and applied as one run.

The engine applies a micro-batch event by event, but a user's interest vectors only need
to be current when something reads them (a fusion lesson, a training example, the
recommendation). :class:`PendingUpdates` queues each update and applies a user's run in
one compiled call (:meth:`InterestModel.apply_many`), in event order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from interest_core.interest import InterestModel, UserState

__all__ = ["PendingUpdates"]


class PendingUpdates:
    """Per user, interest updates not yet applied: (vectors, weights, event times).

    ``interest`` applies them; ``users`` is the live user registry (read at apply time,
    so a user forgotten meanwhile is skipped).
    """

    def __init__(self, interest: InterestModel, users: Mapping[str, UserState]) -> None:
        self.interest = interest
        self.users = users
        self._runs: dict[str, tuple[list[np.ndarray], list[float], list[float]]] = {}

    def defer(self, user_id: str, vector: np.ndarray, weight: float, ts: float) -> None:
        """Queue an interest update (unit ``vector``, signed ``weight``, event time ``ts``
        in unix seconds) for the user's run (see :meth:`apply`)."""
        run = self._runs.get(user_id)
        if run is None:
            run = self._runs[user_id] = ([], [], [])
        run[0].append(vector)
        run[1].append(weight)
        run[2].append(ts)

    def apply(self, user_id: str | None = None) -> None:
        """Apply the queued interest updates, in order: one user's, or everyone's."""
        if user_id is None:
            runs, self._runs = list(self._runs.items()), {}
        elif user_id in self._runs:
            runs = [(user_id, self._runs.pop(user_id))]
        else:
            return
        for user, (vectors, weights, times) in runs:
            state = self.users.get(user)
            if state is not None:
                self.interest.apply_many(state, np.stack(vectors), weights, times)

    def drop(self, user_id: str) -> None:
        """Forget the user's queued updates without applying them."""
        self._runs.pop(user_id, None)
