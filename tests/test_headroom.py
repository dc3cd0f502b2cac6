"""benchmarks/headroom.py: where a model repairs pixels that were already right (`false_repair`)."""

import numpy as np
from conftest import benchmark_module


def _headroom():
    return benchmark_module("headroom")


def test_false_repair_counts_right_pixels_under_the_mask_and_puts_them_back():
    headroom = _headroom()
    rainy = np.full((4, 4, 3), 120, np.uint8)
    clean = rainy.copy()
    clean[:2] = 200                      # the top half is a drop: rainy is wrong there
    derained = rainy.astype(np.int16)
    derained[:2] = 190                   # repaired, nearly right
    derained[2:, :2] = 100               # darkened though it was right (and masked)
    derained = derained.astype(np.uint8)
    mask = np.zeros((4, 4, 1))
    mask[:3] = 1.0                       # masked: the drop and one right row
    share, shift, kept = headroom.false_repair(rainy, clean, derained, mask)
    assert share == 4 / 16               # row 2 only: right and masked
    assert shift == -10.0                # two of its pixels darkened by 20, two unchanged
    np.testing.assert_array_equal(kept[2], rainy[2])
    np.testing.assert_array_equal(kept[:2], derained[:2])  # the drop's repair is kept
    np.testing.assert_array_equal(kept[3], derained[3])    # unmasked pixels are not touched
    none_share, none_shift, none_kept = headroom.false_repair(rainy, clean, derained, mask * 0.1)
    assert none_share == 0.0 and np.isnan(none_shift)
    np.testing.assert_array_equal(none_kept, derained)
