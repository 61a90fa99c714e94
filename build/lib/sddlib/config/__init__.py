"""What a run is: :class:`ExperimentConfig`, every knob one field with its metadata, its
checks and its identity (fields); and the project's settings from ``_config.yml``
(project). Reads the registries of data, models and pruning; imports nothing above them.
"""
from sddlib.config.fields import ConfigError, ExperimentConfig
from sddlib.config.project import load_settings

__all__ = ["ConfigError", "ExperimentConfig", "load_settings"]
