"""The inference-plasticity engine: run-stacked PC/PPC/BP/RBP training (see specs/engine.md)."""
from .config import SGD, Adam, LatentAdam, LatentSGD, TrainConfig, compile_timing, compile_weight_timing
from .core import BatchRecord, Engine
from .network import (Activation, AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, NetworkSpec, forward,
                      init_params)
from .rules import RULES, build_rule

__all__ = [
    "SGD", "Adam", "LatentAdam", "LatentSGD", "TrainConfig", "compile_timing", "compile_weight_timing",
    "BatchRecord", "Engine", "Activation", "AvgPool2d", "Conv2d", "Flatten", "Linear", "MaxPool2d",
    "NetworkSpec", "forward", "init_params", "RULES", "build_rule",
]
