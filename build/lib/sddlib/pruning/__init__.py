"""What pruning is, apart from training: the criteria and masks (prune), packed sparse
layers for the masked levels (sparse), and the retraining modes, each saying which runs
it needs and how a level starts (retrain). Imports only :mod:`sddlib.base`.
"""
from sddlib.pruning.prune import CRITERIA, register_criterion

__all__ = ["CRITERIA", "register_criterion"]
