"""Synthetic tables for the drift tests, where dropping a class moves no feature.

`x1` and `x2` are each -1 or +1 (plus noise) with even odds; the class is `low`
when both are -1, `high` when both are +1, `mid` otherwise: a linear model
(the sum) tells them apart. Without the `mid` rows, `x1` and `x2` are still
-1 or +1 with even odds, so their distributions do not move: only the class
balance does. `x3` and `x4` are noise; the shift scales `x3` by 1.5.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURES = ["x1", "x2", "x3", "x4"]
CLASSES = ["high", "low", "mid"]


def drift_table(rows: int, seed: int, *, shifted: bool = False) -> pd.DataFrame:
    """`rows` rows of the training distribution, or (`shifted`) with `x3` x 1.5 and no `mid`."""
    rng = np.random.default_rng(seed)
    c1 = rng.integers(0, 2, rows) * 2 - 1
    c2 = rng.integers(0, 2, rows) * 2 - 1
    table = pd.DataFrame(
        {
            "x1": c1 + rng.normal(0, 0.3, rows),
            "x2": c2 + rng.normal(0, 0.3, rows),
            "x3": rng.normal(10, 2, rows),
            "x4": rng.normal(0, 1, rows),
            "target": np.where(c1 + c2 < 0, "low", np.where(c1 + c2 > 0, "high", "mid")),
        }
    )
    if shifted:
        table = table[table["target"] != "mid"].reset_index(drop=True)
        table["x3"] *= 1.5
    return table
