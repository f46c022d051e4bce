"""The validation sampler: each rank's share of a set, nothing padded or read twice."""

from __future__ import annotations

import pytest

from persec.data.sampler import RankShareSampler
from persec.errors import PersecError


@pytest.mark.parametrize(("size", "world"), [(32, 2), (7, 2), (10, 3), (3, 3), (5, 1)])
def test_shares_partition_the_set(size, world):
    shares = [list(RankShareSampler(size, rank, world)) for rank in range(world)]
    assert sorted(i for share in shares for i in share) == list(range(size))
    assert [len(RankShareSampler(size, r, world)) for r in range(world)] == list(map(len, shares))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert all(share == sorted(share) for share in shares)  # read in stored order


def test_bad_rank():
    with pytest.raises(PersecError, match="rank"):
        RankShareSampler(10, 2, 2)
