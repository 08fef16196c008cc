"""Architecture descriptions: layers, value-node placement and run-stacked parameters.

A network is described as data (:class:`NetworkSpec`): a tuple of layer specs and where the value
nodes sit. The same description builds the PC net and its BP baseline
(:meth:`NetworkSpec.without_value_nodes`), so the two always share their output layer (engine spec §3).

Parameters live outside the spec, as a dict ``{"<layer index>.weight": Tensor[R, ...], ...}`` with a
leading run axis R: seeds and hyperparameter points are stacked into one tensor program.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from . import activations

Tensor = torch.Tensor
Params = Dict[str, Tensor]


# --------------------------------------------------------------------------------------------------
# layer specs


@dataclass(frozen=True)
class Linear:
    """z = h Wᵀ + b with W of shape [out, in].

    ``mask``: optional 0/1 matrix [out][in] of allowed connections; the zeros are structural and are
    re-imposed after initialisation and after every weight step. ``trainable=False`` fixes the layer.
    """

    in_features: int
    out_features: int
    bias: bool = True
    mask: Optional[Tuple[Tuple[float, ...], ...]] = None
    trainable: bool = True

    def __post_init__(self):
        if self.in_features < 1 or self.out_features < 1:
            raise ValueError(f"Linear needs positive sizes, got {self.in_features}->{self.out_features}")
        if self.mask is not None:
            mask = tuple(tuple(float(v) for v in row) for row in self.mask)
            if len(mask) != self.out_features or any(len(r) != self.in_features for r in mask):
                raise ValueError(f"Linear mask must be {self.out_features}x{self.in_features}")
            object.__setattr__(self, "mask", mask)

    @property
    def weight_shape(self) -> Tuple[int, ...]:
        return (self.out_features, self.in_features)

    @property
    def fan_in(self) -> int:
        return self.in_features


@dataclass(frozen=True)
class Conv2d:
    """2-d convolution, weights [out_channels, in_channels, k, k]."""

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    bias: bool = True
    mask: Optional[Tuple] = None
    trainable: bool = True

    @property
    def weight_shape(self) -> Tuple[int, ...]:
        return (self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)

    @property
    def out_features(self) -> int:
        return self.out_channels

    @property
    def fan_in(self) -> int:
        return self.in_channels * self.kernel_size * self.kernel_size


@dataclass(frozen=True)
class Flatten:
    """Flatten every axis after the batch axis."""


@dataclass(frozen=True)
class MaxPool2d:
    kernel_size: int
    stride: Optional[int] = None


@dataclass(frozen=True)
class AvgPool2d:
    kernel_size: int
    stride: Optional[int] = None


@dataclass(frozen=True)
class Activation:
    """Elementwise nonlinearity, by name (see :mod:`pcneuro.engine.activations`)."""

    name: str

    def __post_init__(self):
        activations.activation(self.name)  # validates the name


Layer = Union[Linear, Conv2d, Flatten, MaxPool2d, AvgPool2d, Activation]
WEIGHT_LAYERS = (Linear, Conv2d)


def is_weight_layer(layer: Layer) -> bool:
    return isinstance(layer, WEIGHT_LAYERS)


# --------------------------------------------------------------------------------------------------
# network spec


@dataclass(frozen=True)
class NetworkSpec:
    """A feed-forward architecture plus the positions of its value nodes.

    ``value_nodes``:
      * ``"pre"`` (default, engine spec placement A): a node right after every hidden weight layer,
        on the pre-activation;
      * ``"post"`` (placement B): a node after the activation that follows each hidden weight layer;
      * ``"none"``: no value nodes (the BP net);
      * a tuple of layer indices: a node on the output of each listed layer.

    ``node_masks``: optional per-node 0/1 unit masks M_l (one tuple per node, or None per node).
    ``node_connectivity``: optional per-node connectivity masks S (engine spec §1.2; one matrix per
    node, or None per node for the default), giving E_l = ½ Σ_b Σ_ij S_ij (μ_bi − x_bj)². S is
    n × n over the node's units (μ and x have the same shape; a conv node's units are its flattened
    C·H·W values). The size is checked here for nodes fed by a Linear layer (n = its out_features)
    and otherwise when the energy is first evaluated. S needs the general (functional) path, so
    :meth:`is_mlp` is False once any S is set. S and M are mutually exclusive: setting both
    ``node_masks`` and ``node_connectivity`` is an error.
    ``input_shape``: the shape of one sample (inferred for nets that start with a Linear layer).
    """

    layers: Tuple[Layer, ...]
    value_nodes: Union[str, Tuple[int, ...]] = "pre"
    node_masks: Optional[Tuple[Optional[Tuple[float, ...]], ...]] = None
    node_connectivity: Optional[Tuple[Optional[Tuple[Tuple[float, ...], ...]], ...]] = None
    input_shape: Optional[Tuple[int, ...]] = None

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        if not any(is_weight_layer(l) for l in self.layers):
            raise ValueError("a network needs at least one weight layer")
        if isinstance(self.value_nodes, str):
            if self.value_nodes not in ("pre", "post", "none"):
                raise ValueError(f"value_nodes must be 'pre', 'post', 'none' or indices, got {self.value_nodes!r}")
        else:
            pos = tuple(int(p) for p in self.value_nodes)
            last_weight = self.weight_layer_indices[-1]
            if list(pos) != sorted(set(pos)) or any(p < 0 or p >= last_weight for p in pos):
                raise ValueError(f"value node positions must be increasing layer indices before the output "
                                 f"weight layer {last_weight} (the output has no value node), got {pos}")
            object.__setattr__(self, "value_nodes", pos)
            for seg in self.segments():
                if not any(is_weight_layer(l) for l in seg):
                    raise ValueError(f"value nodes {pos} leave a segment without a weight layer")
        if self.node_masks is not None and len(self.node_masks) != len(self.node_positions):
            raise ValueError("node_masks needs one entry per value node")
        if self.node_connectivity is not None:
            self._validate_connectivity()
        if self.input_shape is None:
            first = self.layers[0]
            if not isinstance(first, Linear):
                raise ValueError("input_shape is required unless the first layer is Linear")
            object.__setattr__(self, "input_shape", (first.in_features,))
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))

    def _validate_connectivity(self) -> None:
        if self.node_masks is not None:
            raise ValueError("node_masks (M) and node_connectivity (S) are mutually exclusive; set only one")
        if len(self.node_connectivity) != len(self.node_positions):
            raise ValueError("node_connectivity needs one entry per value node")
        matrices = []
        for k, S in enumerate(self.node_connectivity):
            if S is not None:
                S = tuple(tuple(float(v) for v in row) for row in S)
                n = len(S)
                if n == 0 or any(len(row) != n for row in S):
                    raise ValueError(f"node_connectivity[{k}] must be a square n x n matrix (n_mu = n_x)")
                width = self._linear_node_width(k)
                if width is not None and n != width:
                    raise ValueError(f"node_connectivity[{k}] is {n}x{n}, the node has {width} units")
            matrices.append(S)
        object.__setattr__(self, "node_connectivity", tuple(matrices))

    def _linear_node_width(self, k: int) -> Optional[int]:
        """Units of node k when a Linear layer (then only activations) feeds it, else None."""
        i = self.node_positions[k]
        while isinstance(self.layers[i], Activation):
            i -= 1
        return self.layers[i].out_features if isinstance(self.layers[i], Linear) else None

    # -- structure --------------------------------------------------------------------------------
    @property
    def weight_layer_indices(self) -> Tuple[int, ...]:
        return tuple(i for i, l in enumerate(self.layers) if is_weight_layer(l))

    @property
    def node_positions(self) -> Tuple[int, ...]:
        """Layer indices whose outputs carry a value node."""
        if not isinstance(self.value_nodes, str):
            return self.value_nodes
        if self.value_nodes == "none":
            return ()
        weights = self.weight_layer_indices[:-1]  # hidden weight layers only
        if self.value_nodes == "pre":
            return weights
        positions = []
        for i in weights:
            j = i
            if i + 1 < len(self.layers) and isinstance(self.layers[i + 1], Activation):
                j = i + 1
            positions.append(j)
        return tuple(positions)

    @property
    def has_value_nodes(self) -> bool:
        return len(self.node_positions) > 0

    @property
    def n_weight_layers(self) -> int:
        return len(self.weight_layer_indices)

    def segments(self) -> List[Tuple[Layer, ...]]:
        """Layers between consecutive value nodes: μ_l = segment_l(x_{l-1}); the last gives ŷ."""
        cuts = [-1, *self.node_positions, len(self.layers) - 1]
        return [self.layers[a + 1 : b + 1] for a, b in zip(cuts[:-1], cuts[1:])]

    def segment_layer_indices(self) -> List[Tuple[int, ...]]:
        cuts = [-1, *self.node_positions, len(self.layers) - 1]
        return [tuple(range(a + 1, b + 1)) for a, b in zip(cuts[:-1], cuts[1:])]

    def without_value_nodes(self) -> "NetworkSpec":
        """The BP baseline: the same layers (same output layer), no value nodes."""
        return replace(self, value_nodes="none", node_masks=None, node_connectivity=None)

    def param_shapes(self) -> Dict[str, Tuple[int, ...]]:
        shapes: Dict[str, Tuple[int, ...]] = {}
        for i, layer in enumerate(self.layers):
            if is_weight_layer(layer):
                shapes[f"{i}.weight"] = layer.weight_shape
                if layer.bias:
                    shapes[f"{i}.bias"] = (layer.out_features,)
        return shapes

    def trainable_names(self) -> Tuple[str, ...]:
        return tuple(n for n in self.param_shapes() if self.layers[layer_of(n)].trainable)

    @property
    def has_connectivity(self) -> bool:
        """True when some value node has a connectivity mask S."""
        return self.node_connectivity is not None and any(S is not None for S in self.node_connectivity)

    def is_mlp(self) -> bool:
        """True when every segment is [activation] Linear [activation] and no node has a
        connectivity mask S (the closed-form path)."""
        if self.has_connectivity:
            return False
        for seg in self.segments_for_units():
            kinds = [type(l) for l in seg]
            lin = [k for k in kinds if k is Linear]
            if len(lin) != 1 or any(k not in (Linear, Activation) for k in kinds):
                return False
            j = kinds.index(Linear)
            if j > 1 or len(kinds) - j - 1 > 1:
                return False
        return True

    def segments_for_units(self) -> List[Tuple[Layer, ...]]:
        """Split the layers into units of one weight layer each, cutting at value nodes first.

        Activations between two weight layers with no value node in between go to the later unit.
        """
        return [tuple(self.layers[i] for i in idx) for idx in self.unit_layer_indices()]

    def unit_layer_indices(self) -> List[Tuple[int, ...]]:
        units: List[Tuple[int, ...]] = []
        for seg in self.segment_layer_indices():
            current: List[int] = []
            seen_weight = False
            for i in seg:
                if is_weight_layer(self.layers[i]) and seen_weight:
                    # a new weight layer starts a new unit; trailing non-weight layers of the previous
                    # unit move with it only when they precede this weight layer
                    k = len(current)
                    while k > 0 and not is_weight_layer(self.layers[current[k - 1]]):
                        k -= 1
                    units.append(tuple(current[:k]))
                    current = current[k:]
                current.append(i)
                seen_weight = seen_weight or is_weight_layer(self.layers[i])
            units.append(tuple(current))
        return units

    def node_mask_tensor(self, k: int, dtype, device) -> Optional[Tensor]:
        if self.node_masks is None or self.node_masks[k] is None:
            return None
        return torch.tensor(self.node_masks[k], dtype=dtype, device=device)

    def node_connectivity_tensor(self, k: int, dtype, device) -> Optional[Tensor]:
        if self.node_connectivity is None or self.node_connectivity[k] is None:
            return None
        return torch.tensor(self.node_connectivity[k], dtype=dtype, device=device)


def layer_of(param_name: str) -> int:
    return int(param_name.split(".")[0])


def weight_masks(spec: NetworkSpec, dtype, device) -> Dict[str, Tensor]:
    """Structural-zero masks per parameter name (weights only)."""
    out = {}
    for i, layer in enumerate(spec.layers):
        if is_weight_layer(layer) and layer.mask is not None:
            out[f"{i}.weight"] = torch.tensor(layer.mask, dtype=dtype, device=device)
    return out


# --------------------------------------------------------------------------------------------------
# initialisation


def _as_run_tensor(value, n_runs: int, dtype, device) -> Tensor:
    t = torch.as_tensor(value, dtype=dtype, device=device)
    if t.ndim == 0:
        t = t.expand(n_runs)
    if t.shape != (n_runs,):
        raise ValueError(f"per-run value must be a scalar or have shape [{n_runs}], got {tuple(t.shape)}")
    return t


def init_params(
    spec: NetworkSpec,
    seeds: Sequence[int],
    scheme: str = "torch",
    scale: Union[float, Sequence[float], Tensor] = 1.0,
    dtype: torch.dtype = torch.float32,
    device: Union[str, torch.device] = "cpu",
) -> Params:
    """Initial parameters for R = len(seeds) runs, each from its own generator.

    ``scheme``: ``"torch"`` (uniform ±1/√fan_in, as torch's Linear/Conv2d defaults), ``"normal"``
    (N(0, scale²)), ``"xavier_normal"`` (N(0, 2/(fan_in+fan_out)) times scale), ``"xavier_uniform"``
    (U(±√(6/(fan_in+fan_out))) times scale; torch's gain-1 Xavier/Glorot rules), ``"orthogonal"``
    (a Haar-random matrix with orthonormal rows or columns, whichever are fewer, times scale: the
    weight as an [out, fan_in] matrix is Q from the QR factorisation of a Gaussian matrix, with the
    signs of R's diagonal folded into Q; theory spec §1.4). ``scale`` multiplies the draw per run
    (the gain g). Biases start at 0 except under ``"torch"``. Each run's draw depends only on its
    own seed, never on R or on its position among the runs.
    """
    schemes = ("torch", "normal", "xavier_normal", "xavier_uniform", "orthogonal")
    if scheme not in schemes:
        raise ValueError(f"unknown init scheme {scheme!r}; known: {', '.join(schemes)}")
    n_runs = len(seeds)
    scales = _as_run_tensor(scale, n_runs, torch.float64, "cpu")
    shapes = spec.param_shapes()
    per_run: Dict[str, List[Tensor]] = {n: [] for n in shapes}
    for r, seed in enumerate(seeds):
        gen = torch.Generator().manual_seed(int(seed))
        for name, shape in shapes.items():
            layer = spec.layers[layer_of(name)]
            fan_in = layer.fan_in
            if scheme == "torch":
                bound = 1.0 / math.sqrt(fan_in)
                w = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
            elif name.endswith("bias"):
                w = torch.zeros(shape, dtype=torch.float64)
            elif scheme == "normal":
                w = torch.randn(shape, generator=gen, dtype=torch.float64)
            elif scheme == "orthogonal":
                rows, cols = shape[0], math.prod(shape[1:])
                draw = torch.randn(max(rows, cols), min(rows, cols), generator=gen, dtype=torch.float64)
                q, tri = torch.linalg.qr(draw)  # reduced: q has orthonormal columns
                q = q * torch.where(torch.diagonal(tri) < 0, -1.0, 1.0)  # Haar measure: fix QR's sign choice
                w = (q if rows >= cols else q.T).reshape(shape)
            elif scheme == "xavier_normal":
                fan_out = shape[0] * math.prod(shape[2:])
                std = math.sqrt(2.0 / (fan_in + fan_out))
                w = torch.randn(shape, generator=gen, dtype=torch.float64) * std
            else:
                fan_out = shape[0] * math.prod(shape[2:])
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                w = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
            per_run[name].append(w * scales[r])
    params = {n: torch.stack(v).to(dtype=dtype, device=device) for n, v in per_run.items()}
    for name, mask in weight_masks(spec, dtype, device).items():
        params[name] = params[name] * mask
    return params


# --------------------------------------------------------------------------------------------------
# plain forward passes


def apply_layer(layer: Layer, index: int, params: Params, h: Tensor) -> Tensor:
    """One layer for one run (unstacked parameters), batch first."""
    if isinstance(layer, Linear):
        return F.linear(h, params[f"{index}.weight"], params.get(f"{index}.bias"))
    if isinstance(layer, Conv2d):
        return F.conv2d(h, params[f"{index}.weight"], params.get(f"{index}.bias"), layer.stride, layer.padding)
    if isinstance(layer, Activation):
        return activations.apply(layer.name, h)
    if isinstance(layer, Flatten):
        return h.flatten(1)
    if isinstance(layer, MaxPool2d):
        return F.max_pool2d(h, layer.kernel_size, layer.stride)
    if isinstance(layer, AvgPool2d):
        return F.avg_pool2d(h, layer.kernel_size, layer.stride)
    raise TypeError(f"unknown layer {layer!r}")


def apply_layers(layers: Iterable[Tuple[int, Layer]], params: Params, h: Tensor) -> Tensor:
    for index, layer in layers:
        h = apply_layer(layer, index, params, h)
    return h


def forward(spec: NetworkSpec, params: Params, x0: Tensor) -> Tensor:
    """Plain feed-forward output [R, B, out] for stacked params; x0 is [B, ...] (shared) or [R, B, ...]."""
    n_runs = next(iter(params.values())).shape[0]
    if spec.is_mlp():
        h = x0
        for i, layer in enumerate(spec.layers):
            if isinstance(layer, Linear):
                h = torch.matmul(h, params[f"{i}.weight"].transpose(1, 2))
                if layer.bias:
                    h = h + params[f"{i}.bias"].unsqueeze(1)
            else:
                h = activations.apply(layer.name, h)
        if h.ndim == 2:
            h = h.expand(n_runs, *h.shape)
        return h
    indexed = list(enumerate(spec.layers))
    shared = is_shared_input(spec, x0)
    run = lambda p, x: apply_layers(indexed, p, x)  # noqa: E731
    return torch.func.vmap(run, in_dims=(0, None if shared else 0))(params, x0)


def is_shared_input(spec: NetworkSpec, x0: Tensor) -> bool:
    """True for a batch [B, *input_shape] shared by all runs, False for per-run [R, B, *input_shape]."""
    n = len(spec.input_shape)
    if tuple(x0.shape[-n:]) != spec.input_shape or x0.ndim not in (n + 1, n + 2):
        raise ValueError(f"input of shape {tuple(x0.shape)} does not fit samples of shape {spec.input_shape}")
    return x0.ndim == n + 1
