"""Candidate rows: the union of the sources' rows is what ``np.unique`` gives."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from interest_core.candidates import sorted_unique


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.integers(0, 50), max_size=300))
def test_sorted_unique_is_numpys_unique(rows: list[int]) -> None:
    array = np.asarray(rows, dtype=np.int64)
    got = sorted_unique(array)
    expected = np.unique(array)
    assert got.dtype == expected.dtype
    assert got.tolist() == expected.tolist()
    if len(array):
        got[0] = -1  # a new array: the caller's rows are not changed through it
        assert array.min() >= 0
