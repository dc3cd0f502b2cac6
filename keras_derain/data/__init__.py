"""Data: paired photos on disk, synthetic raindrops, and their tf.data pipelines.

Example:
    >>> from keras_derain.data import find_pairs, paired_dataset, DatasetError
"""

from keras_derain.data.images import DatasetError, read_rgb
from keras_derain.data.pairs import check_pairs, find_pairs, paired_dataset

__all__ = ["DatasetError", "check_pairs", "find_pairs", "paired_dataset", "read_rgb"]
