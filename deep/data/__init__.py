"""Datasets: the registry (:func:`register_dataset`, :func:`load_dataset`) and the loaders of the paper's data
(:mod:`~deep.data.images` for MNIST, Omniglot, CIFAR-10, SVHN, CelebA64; :mod:`~deep.data.dsprites`;
:mod:`~deep.data.text` for Yahoo). Every split is a tensor in memory served by ``get_batch``."""
from .registry import DatasetSpec, UnknownDatasetError, load_dataset, register_dataset

__all__ = ["register_dataset", "load_dataset", "DatasetSpec", "UnknownDatasetError"]
