"""Grouping perceptual hashes into near-duplicate groups without comparing every pair.

Candidates come from multi-index hashing (Norouzi et al., 2012): the 64-bit hash is cut into 4
bands of 16 bits; two hashes within Hamming distance 3 agree exactly on at least one band
(pigeonhole), so the hashes that share a band value are the candidates. Copies of one photo
differ by a few more bits now and then, so the bands are taken twice more from the hash with its
bits permuted (fixed permutations): 12 tables, and a pair further apart is found unless its
differing bits hit every band of the three cuts (of copies 0-8 bits apart, 93% are found;
bench/bench_dups.py). What the tables miss on real copies is measured by bench/dups_quality.py
(recall), not assumed.

Per table: sort the n band values (n log n), then pair each hash with the ones after it in its
run of equal values, one distance at a time over the positions whose run is that long. With
uniformly random hashes a 16-bit value is shared by n/65536 hashes, so a table yields about
n^2/131072 candidate pairs: 7.6 million at n = 1,000,000 (30 million at the 2,000,000 hashes of
1,000,000 pictures, whole and centre), each checked by one XOR and popcount (vectorized). Photos
are not uniform (dark frames, sky, documents crowd some values), so runs longer than MAX_RUN are
checked only against their MAX_RUN neighbours in the sort order (by full hash within the run, so
close hashes stay close).

Each candidate pair that passes `accept` is joined in a union-find: a group is a connected set.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BANDS = 4
MAX_RUN = 64
# Fixed permutations of the 64 bit positions (the further cuts): bit i goes to (i * m) % 64 (m odd),
# which spreads neighbouring (correlated) low-frequency bits across bands.
CUTS = (29, 45)
PERMUTATIONS = [np.array([(i * m) % 64 for i in range(64)], dtype=np.uint64) for m in CUTS]


def to_array(hexes: list[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64)


def popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x).astype(np.int64)


def _permute(h: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    out = np.zeros_like(h)
    one = np.uint64(1)
    for i in range(64):
        out |= ((h >> np.uint64(i)) & one) << permutation[i]
    return out


def candidate_pairs(h: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) found in a shared band of either cut, within `max_distance` bits."""
    found_i: list[np.ndarray] = []
    found_j: list[np.ndarray] = []
    for hashes in (h, *(_permute(h, p) for p in PERMUTATIONS)):
        for band in range(BANDS):
            values = (hashes >> np.uint64(16 * band)) & np.uint64(0xFFFF)
            order = np.lexsort((h, values))  # by band value, then by the full hash
            v = values[order]
            # Positions i whose value recurs k places on: those with i + k still in the run. They
            # only shrink as k grows, so each step looks at the pairs of that distance alone.
            at = np.arange(len(v) - 1)
            for k in range(1, MAX_RUN + 1):
                at = at[at + k < len(v)]
                at = at[v[at] == v[at + k]]
                if not len(at):
                    break
                a, b = order[at], order[at + k]
                close = popcount(h[a] ^ h[b]) <= max_distance
                a, b = a[close], b[close]
                found_i.append(np.minimum(a, b))
                found_j.append(np.maximum(a, b))
    if not found_i:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    pairs = np.unique(np.stack([np.concatenate(found_i), np.concatenate(found_j)], axis=1), axis=0)
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group(h: np.ndarray, max_distance: int,
          accept: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
          owners: np.ndarray | None = None) -> list[list[int]]:
    """Groups (of 2 or more indexes, each sorted, by first index) of hashes joined by candidate
    pairs within `max_distance` that `accept(i, j)` (a boolean array) keeps. With `owners`, several
    hashes belong to one item (owners[k] is hash k's item) and the groups are of items."""
    i, j = candidate_pairs(h, max_distance)
    if accept is not None and len(i):
        keep = accept(i, j)
        i, j = i[keep], j[keep]
    if owners is not None:
        i, j = owners[i], owners[j]
        keep = i != j
        i, j = i[keep], j[keep]
    uf = UnionFind(len(h) if owners is None else int(owners.max()) + 1)
    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        uf.union(a, b)
    groups: dict[int, list[int]] = {}
    for x in sorted(set(i.tolist()) | set(j.tolist())):
        groups.setdefault(uf.find(x), []).append(x)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])
