"""Learning rules as configurations of one loop (engine spec §3).

``build_rule(name, spec, ...)`` returns the network spec and :class:`TrainConfig` for a rule, built
from one architecture description so that PC and its baselines share every layer, including the
output layer:

* ``bp``: the net without value nodes, T = 1, one optimiser step on the gradient of ℓ;
* ``pc``: value nodes, latents every step, weights once at t = T−1 (``"last"``);
* ``ppc``: value nodes, weights every step (``"all"``, or ``"last_half"``);
* ``rbp``: no value nodes, T optimiser steps on the same batch (as many weight updates as PPC).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Tuple

from .config import TrainConfig
from .network import NetworkSpec

RULES = ("bp", "pc", "ppc", "rbp")


def build_rule(rule: str, spec: NetworkSpec, config: TrainConfig) -> Tuple[NetworkSpec, TrainConfig]:
    """Adapt ``spec`` and ``config`` (the PC settings) to ``rule``."""
    if rule == "bp":  # no latents: the latent settings, early stop included, do not apply
        return spec.without_value_nodes(), replace(config, T=1, weight_steps="last", stop_lr=None)
    if rule == "rbp":
        return spec.without_value_nodes(), replace(config, weight_steps="all", stop_lr=None)
    if not spec.has_value_nodes:
        raise ValueError(f"rule {rule!r} needs a network with value nodes")
    if rule == "pc":
        return spec, replace(config, latent_steps="all", weight_steps="last")
    if rule == "ppc":
        steps = config.weight_steps if config.weight_steps in ("all", "last_half") else "all"
        return spec, replace(config, latent_steps="all", weight_steps=steps)
    raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
