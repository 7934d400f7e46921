"""The deterministic train/test split: a hash of TARGETID, so a galaxy keeps its split forever."""

from __future__ import annotations

import numpy as np

TEST_FRACTION = 0.2
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # SplitMix64 finaliser: a well-mixed 64-bit hash, identical on every platform.
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def split_of(targetid: np.ndarray, test_fraction: float = TEST_FRACTION) -> np.ndarray:
    """'train' or 'test' for each TARGETID (object array of str, same length)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction {test_fraction} must lie in (0, 1)")
    tid = np.asarray(targetid, dtype=np.int64).view(np.uint64)
    u = (_splitmix64(tid) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.where(u < test_fraction, "test", "train").astype(object)
