"""Recorded behavioural data that pcneuro's paradigms are fitted to, and loaders for your own.

Each built-in dataset is a long-format CSV file in this package (one row per recorded value),
stored verbatim, digit for digit, with a Markdown sidecar of the same name holding its
provenance (specs/behaviour.md §0.3): paper and figure panel, original experiment, how the
values were obtained, units, caveats. The loaders live in :mod:`pcneuro.datasets.behaviour`.

>>> from pcneuro import datasets
>>> datasets.available()
['fear_conditioning', 'reversal_learning', 'sensorimotor_adaptation']
>>> ds = datasets.load_behaviour("fear_conditioning")   # long format, dim "point"
>>> ds.sizes["point"], ds.group.values.tolist()[:2], ds.value.values.tolist()[:2]
(15, ['LN+', 'LN+'], [47.24872978275533, 23.47713468720331])

Your own recorded behaviour, in the documented CSV format (docs/data_format.md), is read into
the same long format with :func:`read_behaviour_csv`::

    ds = datasets.read_behaviour_csv("my_rats.csv", conditions=["group"], value="fear_to_N",
                                     labels={"group": ["N+", "LN+", "LN+,L-"]})

:func:`load` and :func:`load_csv` give the wide shape instead (e.g. ``group`` x ``subject``).
"""
from .behaviour import (
    DATA_DIR,
    available,
    info,
    load,
    load_behaviour,
    load_csv,
    path,
    read_behaviour_csv,
)

from .images import (
    DataCorrupt,
    DataMissing,
    ImageSet,
    balanced_subset,
    data_options,
    data_root,
    load_cifar10,
    load_fashion_mnist,
    load_images,
    one_hot,
    write_cifar10,
    write_fashion_mnist,
    write_idx,
)

__all__ = ["available", "load_behaviour", "read_behaviour_csv", "load", "load_csv", "info", "path", "DATA_DIR",
           "ImageSet", "DataMissing", "DataCorrupt", "data_options", "data_root", "load_images",
           "load_fashion_mnist", "load_cifar10", "balanced_subset", "one_hot",
           "write_idx", "write_fashion_mnist", "write_cifar10"]
