"""Where did it begin? Change-point localisation of an alarm's onset.

Once a detector fires, the standardised scores leading up to the alarm contain one mean
shift: from ~0 (baseline fits) to the anomaly's level. A single least-squares split
(``ruptures`` binary segmentation with an L2 cost, which for one change point is the exact
optimum; Truong, Oudre & Vayatis 2020) finds it. The CUSUM's own estimate — the last time
the statistic was at zero (Page 1954; Montgomery, *Introduction to SQC*, §9.1) — is returned
alongside, and used when the window is too short for a split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Onset:
    """Estimated start of a change.

    ``timestamp``: first point of the new regime (change-point split), epoch seconds.
    ``cusum_timestamp``: first point of the detector's final excursion.
    ``shift``: mean score after minus before the split (in σ; sign = direction).
    """

    timestamp: int
    cusum_timestamp: int
    shift: float
    window_start: int
    window_points: int


def locate_onset(
    timestamps: NDArray[np.int64],
    scores: NDArray[np.float64],
    *,
    run_length: int = 0,
    min_size: int = 2,
) -> Onset:
    """Onset of the single mean shift in ``scores`` (oldest first, the alarm last).

    Missing scores (NaN) are dropped. ``run_length`` is the number of points of the
    detector's final excursion (0 if unknown).

    >>> ts = np.arange(40) * 60
    >>> z = np.r_[np.zeros(25), np.full(15, -2.0)]
    >>> o = locate_onset(ts, z, run_length=15)
    >>> o.timestamp == int(ts[25]), o.shift
    (True, -2.0)
    """
    import ruptures as rpt

    ts = np.asarray(timestamps, dtype=np.int64)
    z = np.asarray(scores, dtype=float)
    if ts.shape != z.shape or ts.ndim != 1:
        raise ValueError(
            f"timestamps and scores must be 1-d of one length: {ts.shape} vs {z.shape}"
        )
    keep = np.isfinite(z)
    ts, z = ts[keep], z[keep]
    if ts.size == 0:
        raise ValueError("no finite scores to locate an onset in")
    cusum_index = max(0, ts.size - max(run_length, 1))
    cusum_ts = int(ts[cusum_index])
    if ts.size < 2 * min_size + 1:
        split = cusum_index
    else:
        algo = rpt.Binseg(model="l2", min_size=min_size, jump=1).fit(z.reshape(-1, 1))
        split = int(algo.predict(n_bkps=1)[0])
    before, after = z[:split], z[split:]
    shift = float(after.mean() - (before.mean() if before.size else 0.0))
    return Onset(
        timestamp=int(ts[split]) if split < ts.size else int(ts[-1]),
        cusum_timestamp=cusum_ts,
        shift=shift,
        window_start=int(ts[0]),
        window_points=int(ts.size),
    )
