"""Shards of a concept table: stable names, contiguous cover, narrowing to missing concepts."""

import pytest

from normguide.sharding import Shard, pending_shards, split_into_shards, suggest_shard_size

IDS = [f"c{i:02d}" for i in range(10)]


@pytest.mark.parametrize("size", [1, 3, 4, 10, 11])
def test_shards_cover_the_table_in_order(size):
    shards = split_into_shards(IDS, size)
    assert [c for s in shards for c in s.concept_ids] == IDS
    assert all(1 <= len(s.concept_ids) <= size for s in shards)
    assert [s.index for s in shards] == list(range(len(shards)))
    assert all(s.total == len(shards) == -(-len(IDS) // size) for s in shards)


def test_names_are_stable_and_sort_in_table_order():
    shards = split_into_shards(IDS, 3)
    assert [s.name for s in shards] == ["shard-001-of-004", "shard-002-of-004", "shard-003-of-004", "shard-004-of-004"]
    assert [s.name for s in split_into_shards(IDS, 3)] == [s.name for s in shards]
    assert Shard(index=9, total=1200, concept_ids=("a",)).name == "shard-0010-of-1200"


def test_empty_table_has_no_shards():
    assert split_into_shards([], 4) == []


@pytest.mark.parametrize("size", [0, -1, 1.5, True, "2"])
def test_bad_shard_size_is_rejected(size):
    with pytest.raises(ValueError, match="shard_size"):
        split_into_shards(IDS, size)


def test_repeated_concept_ids_are_rejected():
    with pytest.raises(ValueError, match="c01"):
        split_into_shards(["c00", "c01", "c01"], 2)


def test_pending_shards_keep_names_and_narrow_to_missing():
    shards = split_into_shards(IDS, 4)  # c00-c03, c04-c07, c08-c09
    pending = pending_shards(shards, ["c05", "c09", "c07", "unknown"])
    assert [(s.name, s.concept_ids) for s in pending] == [
        ("shard-002-of-003", ("c05", "c07")),
        ("shard-003-of-003", ("c09",)),
    ]
    assert pending_shards(shards, []) == []
    assert pending_shards(shards, IDS) == shards


@pytest.mark.parametrize(("concepts", "gpus", "waves", "expected"), [(1000, 8, 3, 42), (10, 4, 1, 3), (3, 8, 3, 1), (0, 2, 3, 1)])
def test_suggest_shard_size(concepts, gpus, waves, expected):
    assert suggest_shard_size(concepts, gpus, waves=waves) == expected
    assert len(split_into_shards([str(i) for i in range(concepts)], expected)) <= max(1, gpus * waves) or expected == 1


@pytest.mark.parametrize("kwargs", [{"num_concepts": -1, "num_gpus": 1}, {"num_concepts": 1, "num_gpus": 0},
                                    {"num_concepts": 1, "num_gpus": 1, "waves": 0}])
def test_suggest_shard_size_rejects_bad_counts(kwargs):
    with pytest.raises(ValueError):
        suggest_shard_size(**kwargs)
