"""Near-duplicate grouping and the seeded, stratified, group-aware train/val/test split of ``ingest``.

Near duplicates (pHash Hamming distance <= threshold, joined transitively: the connected components
of the sparse near-duplicate graph, from scipy) form a group, and a group is assigned to one split
as a whole: a resized or re-encoded copy of a test photo can never sit in train. Rows with an
imported fixed split keep it; when the import gives only train/test, val is carved out of the
train rows.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from acneops.data.records import Item, Quarantine

SPLIT_PRIORITY = ("test", "val", "train")  # a group with conflicting fixed splits keeps the first present
_CHUNK = 2048  # rows of the pairwise distance matrix computed at once


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 element (np.bitwise_count needs numpy >= 2; this also runs on 1.26)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(axis=-1)


def _linked_representatives(hashes: np.ndarray, threshold: int) -> np.ndarray:
    """For each hash, the smallest index of its group (pHashes <= ``threshold`` bits apart, transitively).

    ``scipy.sparse.csgraph.connected_components`` on the sparse adjacency, built one chunk of rows at
    a time; after each chunk the edges found so far are replaced by a star per group (item ->
    representative), so memory stays bounded by one chunk even when most images are near duplicates.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(hashes)
    rep = np.arange(n)  # (n,) representative (smallest index) of each item's group so far
    for start in range(0, n, _CHUNK):
        block = hashes[start:start + _CHUNK, None] ^ hashes[None, :]  # (chunk, n)
        rows, cols = np.nonzero(_popcount(block) <= threshold)
        src, dst = np.concatenate([rows + start, np.arange(n)]), np.concatenate([cols, rep])
        adjacency = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
        n_groups, label = connected_components(adjacency, directed=False)
        first = np.full(n_groups, n)
        np.minimum.at(first, label, np.arange(n))
        rep = first[label]
    return rep


def near_duplicate_groups(items: list[Item], threshold: int) -> dict[str, list[Item]]:
    """Groups of items whose pHashes differ in <= ``threshold`` bits (transitively); sets ``item.group``.

    The group id is the first 16 hex digits of the sha256 of the group's alphabetically first image,
    so ids are stable when unrelated images are added. Pairwise distances are computed in chunks
    (O(n^2) popcounts: ~1 s for 10,000 images).
    """
    items.sort(key=lambda it: it.image)
    hashes = np.array([int(it.info["phash"], 16) for it in items], dtype=np.uint64)
    rep = _linked_representatives(hashes, threshold)
    groups: dict[str, list[Item]] = {}
    for i, it in enumerate(items):
        it.group = items[int(rep[i])].info["sha256"][:16]
        groups.setdefault(it.group, []).append(it)
    return groups


def resolve_fixed_conflicts(items: list[Item], groups: dict[str, list[Item]], quarantine: Quarantine) -> list[Item]:
    """Near duplicates with different imported splits: keep those in the most protected split.

    Priority test > val > train: a training photo that is a near copy of a fixed test photo would
    leak the test set, so it is quarantined (kind ``split_conflict``) rather than moved.
    """
    dropped: set[int] = set()
    for gid, members in groups.items():
        fixed = {m.fixed_split for m in members if m.fixed_split}
        if len(fixed) < 2:
            continue
        keep = next(s for s in SPLIT_PRIORITY if s in fixed)
        anchor = next(m.image for m in members if m.fixed_split == keep)
        for m in members:
            if m.fixed_split and m.fixed_split != keep:
                quarantine.add(m.image, m.row, "split_conflict",
                               f"near duplicate of {anchor} (fixed split {keep}) but fixed to {m.fixed_split}; "
                               f"dropped so the {keep} split cannot leak")
                dropped.add(id(m))
        groups[gid] = [m for m in members if id(m) not in dropped]
    return [it for it in items if id(it) not in dropped]


def _allocate(pool: list[list[Item]], targets: list[tuple[str, int]], rest: str) -> None:
    """Fill splits in ``targets`` order up to their image counts with whole groups; the rest get ``rest``."""
    filled = Counter()
    for members in pool:
        split = next((s for s, n in targets if filled[s] < n), rest)
        filled[split] += len(members)
        for m in members:
            m.split = split


def _target(fraction: float, n: int) -> int:
    """round(fraction * n), but at least 1 image when the fraction is positive and n >= 3."""
    count = int(round(fraction * n))
    return max(count, 1) if fraction > 0 and n >= 3 else count


def _stratum(members: list[Item], classes: tuple[str, ...]) -> str:
    """The majority label of a group (ties broken by the order of ``classes``)."""
    counts = Counter(m.label for m in members)
    return max(classes, key=lambda c: (counts[c], -classes.index(c)))


def assign_splits(items: list[Item], classes: tuple[str, ...], seed: int,
                  val_fraction: float, test_fraction: float) -> None:
    """Set ``item.split`` for every item: stratified by label, seeded, whole groups at a time."""
    groups: dict[str, list[Item]] = {}
    for it in items:
        groups.setdefault(it.group, []).append(it)
    has_fixed = any(it.fixed_split for it in items)
    has_fixed_val = any(it.fixed_split == "val" for it in items)
    for label in classes:
        stratum = [groups[g] for g in sorted(groups) if _stratum(groups[g], classes) == label]
        free = [m for m in stratum if not any(x.fixed_split for x in m)]
        fixed = [m for m in stratum if any(x.fixed_split for x in m)]
        for members in fixed:
            split = next(s for s in SPLIT_PRIORITY if any(x.fixed_split == s for x in members))
            for m in members:
                m.split = split
        rng = random.Random(f"ingest-split:{seed}:{label}")
        rng.shuffle(free)
        n_free = sum(len(m) for m in free)
        _allocate(free, [("test", _target(test_fraction, n_free)), ("val", _target(val_fraction, n_free))], "train")
        if has_fixed and not has_fixed_val:
            train = [m for m in fixed if m[0].split == "train"]
            rng.shuffle(train)
            n_fixed = sum(len(m) for m in fixed)
            _allocate(train, [("val", _target(val_fraction, n_fixed))], "train")


def split_table(items: list[Item], classes: tuple[str, ...]) -> dict[str, Any]:
    """{split: {class: count}} for the report."""
    return {s: {c: sum(1 for it in items if it.split == s and it.label == c) for c in classes}
            for s in ("train", "val", "test")}
