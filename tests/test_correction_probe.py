"""benchmarks/correction_probe.py: the correction head binned by the drop mask."""

import numpy as np
from conftest import benchmark_module


def _probe():
    return benchmark_module("correction_probe")


def test_correction_by_mask_bins_shares_means_and_right_pixels():
    probe = _probe()
    mask = np.array([[0.0, 0.1], [0.3, 1.0]])
    correction = np.array([[5.0, -4.0], [-20.0, -30.0]])
    rainy = np.full((2, 2), 100.0)
    clean = np.array([[100.0, 102.0], [90.0, 70.0]])   # right, right, wrong, wrong
    rows = probe.correction_by_mask(correction, mask, rainy, clean)
    shares = [row[2] for row in rows]
    assert shares == [0.25, 0.25, 0.25, 0.25]
    assert [row[3] for row in rows] == [5.0, -4.0, -20.0, -30.0]
    assert rows[1][4] == -4.0 and rows[1][5] == 0.25          # the right pixel under a partial mask
    assert np.isnan(rows[3][4]) and rows[3][5] == 0.0          # no right pixel under the full mask
    assert [row[6] for row in rows] == [0.0, 2.0, -10.0, -30.0]
