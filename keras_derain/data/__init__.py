"""Data: paired photos on disk, synthetic raindrops, and their tf.data pipelines.

Example:
    >>> from keras_derain.data import find_pairs, paired_dataset, DatasetError
"""

from keras_derain.data.images import DatasetError, read_rgb
from keras_derain.data.pairs import check_pairs, find_pairs, paired_dataset
from keras_derain.data.raindrops import RaindropOptions, render_raindrops
from keras_derain.data.synthetic import builtin_clean_images, synthetic_dataset

__all__ = [
    "DatasetError",
    "RaindropOptions",
    "builtin_clean_images",
    "check_pairs",
    "find_pairs",
    "paired_dataset",
    "read_rgb",
    "render_raindrops",
    "synthetic_dataset",
]
