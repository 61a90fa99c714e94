"""One run end to end: a level's training and its fast path (train, fast, sparse layers
from :mod:`sddlib.pruning`), stacked ensembles (ensemble), distillation (distill), the
per-level measures (distance, entropy), one run through all its levels (experiment),
stored runs read back and their older measures upgraded (checkpoints, reuse). Imports
storage and below; nothing here knows about many runs.
"""
