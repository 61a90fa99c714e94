"""The networks: LeNet-300-100 (mlp), the 1-D CNN, the ResNets and the VGGs, their registry
(:func:`register_model`) and what each declares about itself (architectures). Imports
nothing else of sddlib.
"""
from sddlib.models.architectures import MODELS, build_model, register_model

__all__ = ["MODELS", "build_model", "register_model"]
