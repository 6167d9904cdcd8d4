"""Deterministic assignment of units to arms: hashing, layers, holdouts, staged rollouts.

The algorithm is published so that any language reproduces it with its standard SHA-256
(test vectors in ``docs/assignment.md`` and ``tests/experiments/assignment_vectors.json``):

1. ``h = first 8 bytes of SHA-256(utf8(key))`` read as a big-endian unsigned 64-bit integer.
2. The high 32 bits give one position in [0, 1): ``(h >> 32) / 2**32``; the low 32 bits give
   a second, independent one: ``(h & 0xFFFFFFFF) / 2**32``.
3. Keys, for experiment salt ``s`` (default: the experiment name) and unit ``u``:
   - global holdout: key ``"holdout:" + holdout_salt + ":" + u``, high position < holdout share;
   - layer: key ``"layer:" + layer + ":" + u``, high position; the experiment owns
     ``[start, end)`` of its layer, so experiments in one layer never share a unit and
     different layers are independent;
   - experiment: key ``s + ":" + u``; the unit is enrolled when the high position < rollout
     share (raising the share keeps every unit already enrolled: stages 1% → 5% → 25% → 50%
     only add units), and its arm is the low position mapped through the cumulative arm
     weights (independent of the rollout position, so an arm never changes as rollout grows).

SHA-256 is in every language's standard library and has no weak bits for sequential ids.
One assignment (:func:`assign`) costs one ``hashlib`` call plus integer compares against
thresholds precomputed on the :class:`Allocation` (``position < share`` is evaluated as
``32-bit bucket < share · 2**32``, which is the same comparison exactly: scaling by a power
of two is exact in binary floating point). Batches (:func:`assign_many`,
:func:`unit_hashes`) run SHA-256 itself vectorised in NumPy over cache-sized chunks of
single-block keys (≤ 55 UTF-8 bytes; longer keys fall back to ``hashlib``), because the
per-key Python object overhead of ``hashlib`` (hash object + digest bytes, ≈ 0.8 µs) alone
exceeds the 1 µs budget of a million assignments per second. Both paths are tested
against each other and against the published vectors.

References: Kohavi, Tang & Xu, *Trustworthy Online Controlled Experiments* (2020), ch. 4 and
14 (layers, holdouts, ramping); Tang et al., "Overlapping Experiment Infrastructure" (KDD 2010).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

NOT_ENROLLED = -1
_TWO_32 = float(2**32)
_sha256 = hashlib.sha256

# --------------------------------------------------------------------------- SHA-256 in NumPy

# FIPS 180-4 §4.2.2 round constants and §5.3.3 initial hash value.
_K = np.array(
    [
        0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4,
        0xAB1C5ED5, 0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE,
        0x9BDC06A7, 0xC19BF174, 0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F,
        0x4A7484AA, 0x5CB0A9DC, 0x76F988DA, 0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7,
        0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967, 0x27B70A85, 0x2E1B2138, 0x4D2C6DFC,
        0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85, 0xA2BFE8A1, 0xA81A664B,
        0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070, 0x19A4C116,
        0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
        0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7,
        0xC67178F2,
    ],
    dtype=np.uint32,
)  # fmt: skip
_H0 = np.array(
    [
        0x6A09E667,
        0xBB67AE85,
        0x3C6EF372,
        0xA54FF53A,
        0x510E527F,
        0x9B05688C,
        0x1F83D9AB,
        0x5BE0CD19,
    ],
    dtype=np.uint32,
)
_CHUNK = 32_768  # rows per vectorised block (the working arrays stay in L2 cache)
_MAX_SINGLE_BLOCK = 55  # key bytes that fit one 64-byte block with padding and length
_VECTOR_MIN = 64  # below this many keys hashlib is faster


def _rotr(x: np.ndarray, n: int, out: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    np.right_shift(x, n, out=out)
    np.left_shift(x, 32 - n, out=tmp)
    np.bitwise_or(out, tmp, out=out)
    return out


def _compress_head(words: np.ndarray) -> np.ndarray:
    """First 8 bytes (big-endian uint64) of the SHA-256 of single-block messages.

    ``words`` is (16, n) uint32: each column one padded 64-byte block read big-endian.
    FIPS 180-4 §6.2.2 with every operation applied to all n messages at once.
    """
    n = words.shape[1]
    w = np.empty((64, n), dtype=np.uint32)
    w[:16] = words
    t1, t2, t3 = (np.empty(n, dtype=np.uint32) for _ in range(3))
    for t in range(16, 64):
        x = w[t - 15]  # σ0
        _rotr(x, 7, t1, t3)
        _rotr(x, 18, t2, t3)
        t1 ^= t2
        np.right_shift(x, 3, out=t2)
        t1 ^= t2
        t1 += w[t - 16]
        t1 += w[t - 7]
        x = w[t - 2]  # σ1
        _rotr(x, 17, t2, t3)
        _rotr(x, 19, t3, w[t])
        t2 ^= t3
        np.right_shift(x, 10, out=t3)
        t2 ^= t3
        np.add(t1, t2, out=w[t])
    w += _K[:, None]
    a, b, c, d, e, f, g, h = (np.full(n, v, dtype=np.uint32) for v in _H0)
    ab, bc = np.empty(n, dtype=np.uint32), np.bitwise_xor(b, c)
    for t in range(64):
        _rotr(e, 6, t1, t3)  # Σ1(e)
        _rotr(e, 11, t2, t3)
        t1 ^= t2
        _rotr(e, 25, t2, t3)
        t1 ^= t2
        h += t1
        np.bitwise_xor(f, g, out=t2)  # Ch(e, f, g) = g ^ (e & (f ^ g))
        t2 &= e
        t2 ^= g
        h += t2
        h += w[t]  # h is T1 now
        d += h
        _rotr(a, 2, t1, t3)  # Σ0(a)
        _rotr(a, 13, t2, t3)
        t1 ^= t2
        _rotr(a, 22, t2, t3)
        t1 ^= t2
        # Maj(a, b, c) = b ^ ((a ^ b) & (b ^ c)); this round's a ^ b is the next one's b ^ c
        np.bitwise_xor(a, b, out=ab)
        np.bitwise_and(ab, bc, out=t2)
        t2 ^= b
        h += t1
        h += t2  # T1 + T2
        a, b, c, d, e, f, g, h = h, a, b, c, d, e, f, g
        ab, bc = bc, ab
    a += _H0[0]
    b += _H0[1]
    out = a.astype(np.uint64)
    out <<= np.uint64(32)
    out |= b
    return out


def _utf8_with_offsets(unit_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """All units' UTF-8 bytes concatenated, and the (n + 1) offsets of each unit in them."""
    units = unit_ids
    try:
        text = "".join(units)
    except TypeError:  # not all strings
        units = [str(u) for u in unit_ids]
        text = "".join(units)
    data = text.encode("utf-8")
    if len(data) == len(text):  # ASCII: byte lengths are character lengths
        lengths = np.fromiter(map(len, units), dtype=np.int64, count=len(units))
    else:
        lengths = np.fromiter((len(u.encode("utf-8")) for u in units), np.int64, len(units))
    offsets = np.zeros(len(units) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return np.frombuffer(data, dtype=np.uint8), offsets


def _hashes_vectorised(prefix: bytes, unit_ids: Sequence[str]) -> np.ndarray:
    """:func:`unit_hash` of ``prefix + unit`` for every unit (NumPy SHA-256, see module)."""
    data, offsets = _utf8_with_offsets(unit_ids)
    n = len(offsets) - 1
    out = np.empty(n, dtype=np.uint64)
    p = len(prefix)
    prefix_bytes = np.frombuffer(prefix, dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        m = stop - start
        offs = offsets[start : stop + 1]
        lengths = np.diff(offs)
        total = p + lengths
        single = total <= _MAX_SINGLE_BLOCK
        block = np.zeros((m, 64), dtype=np.uint8)
        block[:, :p] = prefix_bytes
        kept = np.where(single, lengths, 0)
        starts, last = offs[:-1], max(len(data) - 1, 0)
        for j in range(int(kept.max(initial=0))):  # byte j of every unit, column by column
            block[:, p + j] = np.where(kept > j, data[np.minimum(starts + j, last)], 0)
        flat = block.reshape(-1)
        rows = np.flatnonzero(single)
        bits = total[rows] * 8
        flat[rows * 64 + total[rows]] = 0x80
        flat[rows * 64 + 62] = bits >> 8
        flat[rows * 64 + 63] = bits & 0xFF
        words = np.ascontiguousarray(block.view(">u4").astype(np.uint32).T)
        out[start:stop] = _compress_head(words)
        for i in np.flatnonzero(~single):  # keys longer than one block: hashlib
            key = prefix + data[offs[i] : offs[i + 1]].tobytes()
            out[start + i] = int.from_bytes(_sha256(key).digest()[:8], "big")
    return out


# --------------------------------------------------------------------------- the hash


def unit_hash(key: str) -> int:
    """First 8 bytes of SHA-256 of ``key`` as a big-endian unsigned 64-bit integer.

    >>> unit_hash("ranker_v2:user-1")
    8977640915012565696
    """
    return int.from_bytes(_sha256(key.encode("utf-8")).digest()[:8], "big")


def positions(key: str) -> tuple[float, float]:
    """The two independent positions in [0, 1) of ``key``: (high 32 bits, low 32 bits)."""
    h = unit_hash(key)
    return (h >> 32) / _TWO_32, (h & 0xFFFFFFFF) / _TWO_32


def unit_hashes(prefix: str, unit_ids: Sequence[str]) -> np.ndarray:
    """:func:`unit_hash` of ``prefix + unit_id`` for many units (uint64 array).

    Vectorised SHA-256 for batches (see the module docstring); identical results.
    """
    if len(unit_ids) >= _VECTOR_MIN:
        return _hashes_vectorised(prefix.encode("utf-8"), unit_ids)
    raw = b"".join([_sha256(f"{prefix}{u}".encode()).digest()[:8] for u in unit_ids])
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64)


def positions_many(prefix: str, unit_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`positions` (two float64 arrays)."""
    h = unit_hashes(prefix, unit_ids)
    return (h >> np.uint64(32)).astype(np.float64) / _TWO_32, (h & np.uint64(0xFFFFFFFF)).astype(
        np.float64
    ) / _TWO_32


# --------------------------------------------------------------------------- allocations


@dataclass(frozen=True)
class _Cuts:
    """An allocation's keys and shares precomputed for the hot path (shares × 2**32)."""

    experiment_prefix: str
    holdout_prefix: str
    layer_prefix: str
    rollout: float
    holdout: float
    layer_start: float
    layer_end: float
    arm_edges: tuple[float, ...]  # cumulative weights × 2**32, all but the last


@dataclass(frozen=True)
class Allocation:
    """How one experiment allocates units. Shares are fractions in [0, 1]."""

    experiment: str
    arms: tuple[str, ...]
    weights: tuple[float, ...]
    salt: str = ""
    rollout: float = 1.0
    layer: str | None = None
    layer_range: tuple[float, float] = (0.0, 1.0)
    holdout_share: float = 0.0
    holdout_salt: str = "global"
    killed: bool = False
    cumulative: tuple[float, ...] = field(init=False, repr=False)
    cuts: _Cuts = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.arms) < 2 or len(self.arms) != len(self.weights):
            raise ValueError(f"{self.experiment}: need ≥ 2 arms with one weight each")
        if any(w <= 0 for w in self.weights):
            raise ValueError(f"{self.experiment}: arm weights must be positive, got {self.weights}")
        for name, share in (("rollout", self.rollout), ("holdout_share", self.holdout_share)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{self.experiment}: {name} must be in [0, 1], got {share}")
        start, end = self.layer_range
        if not 0.0 <= start < end <= 1.0:
            raise ValueError(f"{self.experiment}: layer_range must satisfy 0 ≤ start < end ≤ 1")
        total = float(sum(self.weights))
        cumulative = tuple(float(c) for c in np.cumsum(self.weights) / total)
        object.__setattr__(self, "cumulative", cumulative)
        cuts = _Cuts(
            experiment_prefix=f"{self.experiment_salt}:",
            holdout_prefix=f"holdout:{self.holdout_salt}:",
            layer_prefix=f"layer:{self.layer}:",
            rollout=self.rollout * _TWO_32,
            holdout=self.holdout_share * _TWO_32,
            layer_start=start * _TWO_32,
            layer_end=end * _TWO_32,
            arm_edges=tuple(c * _TWO_32 for c in cumulative[:-1]),
        )
        object.__setattr__(self, "cuts", cuts)

    @property
    def experiment_salt(self) -> str:
        return self.salt or self.experiment


class Assignment(NamedTuple):
    """Where one unit landed and why (``arm`` is None when not enrolled)."""

    experiment: str
    unit_id: str
    arm: str | None
    reason: str  # assigned | killed | holdout | outside_layer_range | outside_rollout


def _high(key: str) -> int:
    """The high 32 bits of :func:`unit_hash` (the bucket compared with shares × 2**32)."""
    return int.from_bytes(_sha256(key.encode()).digest()[:4], "big")


def assign(allocation: Allocation, unit_id: str) -> Assignment:
    """Assign one unit (the rules in the module docstring, checked in that order).

    >>> ab = Allocation("ranker_v2", ("control", "treatment"), (50, 50))
    >>> assign(ab, "user-1").arm
    'treatment'
    """
    unit = unit_id if type(unit_id) is str else str(unit_id)
    cuts = allocation.cuts
    if allocation.killed:
        return Assignment(allocation.experiment, unit, None, "killed")
    if cuts.holdout and _high(cuts.holdout_prefix + unit) < cuts.holdout:
        return Assignment(allocation.experiment, unit, None, "holdout")
    if allocation.layer is not None and not (
        cuts.layer_start <= _high(cuts.layer_prefix + unit) < cuts.layer_end
    ):
        return Assignment(allocation.experiment, unit, None, "outside_layer_range")
    h = int.from_bytes(_sha256((cuts.experiment_prefix + unit).encode()).digest()[:8], "big")
    if (h >> 32) >= cuts.rollout:
        return Assignment(allocation.experiment, unit, None, "outside_rollout")
    arm = allocation.arms[bisect_right(cuts.arm_edges, h & 0xFFFFFFFF)]
    return Assignment(allocation.experiment, unit, arm, "assigned")


def assign_many(allocation: Allocation, unit_ids: Sequence[str]) -> np.ndarray:
    """Arm index per unit (``NOT_ENROLLED`` = -1 when not enrolled); same rules as :func:`assign`."""
    n = len(unit_ids)
    if allocation.killed or n == 0:
        return np.full(n, NOT_ENROLLED, dtype=np.int64)
    cuts = allocation.cuts
    h = unit_hashes(cuts.experiment_prefix, unit_ids)
    high = h >> np.uint64(32)
    enrolled = high < cuts.rollout
    if allocation.holdout_share:
        held = unit_hashes(cuts.holdout_prefix, unit_ids) >> np.uint64(32)
        enrolled &= held >= cuts.holdout
    if allocation.layer is not None:
        layer = unit_hashes(cuts.layer_prefix, unit_ids) >> np.uint64(32)
        enrolled &= (layer >= cuts.layer_start) & (layer < cuts.layer_end)
    low = h & np.uint64(0xFFFFFFFF)
    arms = np.searchsorted(np.asarray(cuts.arm_edges), low, side="right").astype(np.int64)
    return np.where(enrolled, arms, NOT_ENROLLED)
