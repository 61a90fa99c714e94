"""Datasets: the registry (:func:`register_dataset`), the loaders of MNIST-1D, the real MNIST
digits, MNIST, Fashion-MNIST, CIFAR and Tiny ImageNet, label noise, fingerprints
(datasets), and writers of the real on-disk formats for tests and rehearsals (formats).
Imports only :mod:`sddlib.base`.
"""
from sddlib.data.datasets import DATASETS, register_dataset

__all__ = ["DATASETS", "register_dataset"]
