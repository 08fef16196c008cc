"""Closed-form objective and gradients for Linear stacks (engine spec §1.3, §4.2 items 1 and 3).

The network is cut into *units*, one weight layer each, with at most one activation before and one
after it. A unit boundary either carries a value node (a latent x_l with energy ½c·M⊙(x_l − μ_l)²,
plus the optional latent penalty λ|x_l|) or is a plain pass-through; a net without value nodes is
therefore plain BP through the same code. Connectivity masks S need the functional backend.
One evaluation costs, per unit, one GEMM for μ and one for the error sent down, plus the weight
gradient GEMM only when the caller asks for it. μ₁ of the first unit (input fixed during a batch) is
cached until the first weight layer steps. For the squared error (run-first layout) the loss, the
energy and F come from one reduction over the errors laid side by side (``_fused_objective``).

Output mask (engine spec §1.2 extended): ℓ = ½ Σ m ⊙ (ŷ − y)², or −Σ_b m_b Σ_k y_bk log softmax(ŷ_b)_k
for cross-entropy (row masks only). The engine hands the backends a *clean* target (masked-out
entries replaced by 0 with ``torch.where``, so NaN/inf there never reach a sum) and the mask
expanded to the target's shape.

Tiny networks (``run_last=True``): many stacked runs of nets with a few units per layer (the
behavioural paradigms: ~10⁴ runs of 2-2-2 nets, batch 1) are bound by per-kernel overheads, not by
arithmetic. There the backend keeps every run-stacked tensor in a *run-last* memory layout (logical
shape [R, ...], the run axis physically innermost, see :func:`to_run_last`), so every elementwise op,
per-run broadcast (η, λ, c) and per-run sum runs over contiguous vectors of length R; each Linear
contraction is unrolled over its small contraction axis (K ≤ ``UNROLL_K`` multiply-adds) or, when
that axis is long but the other one short, one multiply-and-sum per output unit. Values are the
same as the bmm path up to rounding.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from . import activations
from .config import host_values
from .network import Linear, NetworkSpec

Tensor = torch.Tensor


@dataclass(frozen=True)
class Unit:
    layer_index: int
    bias: bool
    pre_act: Optional[str]
    post_act: Optional[str]
    ends_in_node: bool


def compile_units(spec: NetworkSpec) -> List[Unit]:
    if not spec.is_mlp():
        raise ValueError("the closed-form engine handles [activation] Linear [activation] units only")
    nodes = set(spec.node_positions)
    units = []
    for idx in spec.unit_layer_indices():
        kinds = [spec.layers[i] for i in idx]
        j = next(n for n, l in enumerate(kinds) if isinstance(l, Linear))
        pre = kinds[0].name if j == 1 else None
        post = kinds[j + 1].name if j + 1 < len(kinds) else None
        units.append(Unit(idx[j], kinds[j].bias, pre, post, idx[-1] in nodes))
    if units[-1].ends_in_node:
        raise ValueError("the output layer carries no value node")
    return units


@dataclass
class Evaluation:
    """One evaluation of F at (x, θ): per-run scalars and gradients (None where not formed)."""

    loss: Optional[Tensor]  # [R]; None when the objective was not asked for
    energy: Optional[Tensor]  # [R], Σ_l E_l unscaled by c
    objective: Optional[Tensor]  # [R], F = loss + c·E + R(x)
    latent_grads: List[Tensor]
    weight_grads: Dict[str, Tensor]
    stacked: Optional[Tensor] = None  # [R, 3]: (loss, energy, objective) as one tensor, when formed so


UNROLL_K = 8  # run-last layout: contractions over at most this many units are unrolled
_ONES = [[1] * k for k in range(UNROLL_K + 1)]
# "auto" picks the run-last layout on CPU from this many stacked runs on, for Linear layers with
# min(in, out) <= 8 and batch * max(in, out) <= 128 (measured by benchmarks/tiny_net_speed.py:
# 2-2-2 nets at batch 1: even at R = 1024, 1.4x at 4096, 2.2x at 10368; 2-32-2 nets lose at batch 8)
TINY_MIN_RUNS, TINY_MAX_SHORT, TINY_MAX_WORK = 2048, 8, 128


def to_run_last(t: Tensor) -> Tensor:
    """The same values [R, ...] with the run axis physically innermost (strides (1, ..., R))."""
    if t.ndim < 2:
        return t
    return t.movedim(0, -1).contiguous().movedim(-1, 0)


def empty_run_last(shape, like: Tensor) -> Tensor:
    return torch.empty((*shape[1:], shape[0]), dtype=like.dtype, device=like.device).movedim(-1, 0)


def suits_run_last(spec: NetworkSpec, n_runs: int, batch: int, device) -> bool:
    """Whether the "auto" layout picks run-last: many runs of small Linear layers on the CPU."""
    if torch.device(device).type != "cpu" or n_runs < TINY_MIN_RUNS:
        return False
    sizes = [(l.in_features, l.out_features) for l in spec.layers if isinstance(l, Linear)]
    return all(min(s) <= TINY_MAX_SHORT and batch * max(s) <= TINY_MAX_WORK for s in sizes)


def clean_target(y: Tensor, mask: Optional[Tensor]):
    """(target with masked-out entries set to 0, mask expanded to that target's shape, or None).

    ``torch.where`` (not a product) removes the masked-out entries, so NaN/inf there are ignored."""
    if mask is None:
        return y, None
    y_clean = torch.where(mask != 0, y, torch.zeros((), dtype=y.dtype, device=y.device))
    return y_clean, mask.expand(y_clean.shape).contiguous()


def output_error(y_hat: Tensor, y: Tensor, loss: str, mask: Optional[Tensor] = None, rsum=None):
    """(per-run loss [R], e_L = −∂ℓ/∂ŷ) for the summed squared error or summed cross-entropy.

    ``y`` is the clean target and ``mask`` the output mask of :func:`clean_target` (or None);
    ``rsum`` sums a [R, ...] tensor per run (default: ``sum`` over all other axes)."""
    rsum = rsum or (lambda t: t.sum(dim=tuple(range(1, t.ndim))))
    if loss == "sse":
        d = y - y_hat
        e = d if mask is None else mask * d
        return 0.5 * rsum(d * e), e
    log_p = torch.log_softmax(y_hat, dim=-1)
    if mask is None:
        return -rsum(y * log_p), y - log_p.exp()
    return -rsum(mask * y * log_p), mask * (y - log_p.exp())


def active_penalty(latent_l1: Optional[Tensor]) -> Optional[Tensor]:
    """The per-run latent-penalty weights λ [R], or None when λ = 0 for every run (then R(x) costs nothing).

    Reads the values: give a host tensor (the backends move the weights to the device afterwards)."""
    return None if latent_l1 is None or not bool((host_values(latent_l1) != 0).any()) else latent_l1


def on_device(t: Optional[Tensor], dtype, device) -> Optional[Tensor]:
    """A per-run hyperparameter tensor (or None) in the runs' dtype on their device."""
    return None if t is None else t.to(dtype=dtype, device=device)


def output_error_only(y_hat: Tensor, y: Tensor, loss: str, mask: Optional[Tensor] = None) -> Tensor:
    """e_L = −∂ℓ/∂ŷ without the loss value."""
    e = y - y_hat if loss == "sse" else y - torch.softmax(y_hat, dim=-1)
    return e if mask is None else mask * e


#: activations whose f and grad ⊙ f' have out= forms (the fused sweep writes into its own buffers)
_OUT_FORMS = {
    "sigmoid": (torch.sigmoid, torch.ops.aten.sigmoid_backward.grad_input),
    "tanh": (torch.tanh, torch.ops.aten.tanh_backward.grad_input),
}


class FusedSweep:
    """Inference steps with in-place latent updates on buffers the backend owns (engine spec §4.2 item 1).

    For a placement-"pre" chain (every hidden boundary a value node, one activation f applied to every
    latent, squared-error loss, c = 1, no unit masks or latent penalty) while the weights stay
    frozen, each step is a fixed, short list of kernels on preallocated buffers:

    * forward: A = f(X) over all latents at once; one GEMM per unit above the first writes its z into
      Z; E = S − Z in one subtraction, where S = [x_1 … x_N | y] and Z = [μ_1 … μ_N | ŷ] (μ_1, the
      first layer's product, is copied in once per batch), so E = [ε_1 … ε_N | y − ŷ];
    * 2F (the latent-rate rule only compares F_t with F_{t−1}, so the factor ½ is left out) is one
      dot product of E for R = 1, else E² and one matrix-vector product (per-run sums) per block;
    * backward: one GEMM per unit above the first writes e_{l+1}W_{l+1} into P; P ← f'(X) ⊙ P and
      P ← E_h − P (the latent gradient) in place; X ← X − η P in place.

    That is 2N + 6 kernels for N value nodes (R > 1: N + 1 more for the per-run sums), plus three
    for the latent-rate rule (N = 2, R = 1: 13). Each
    buffer stores its blocks one after another, each block [R, B, n] contiguous, so GEMM operands
    and outputs stay contiguous for any R. The ops are the closed-form backend's (the same GEMMs and
    activation-derivative kernels, ε = x − z), so values agree with ``evaluate`` up to the rounding
    of elementwise kernels over differently aligned buffers. The buffers of one input shape are
    allocated once and reused by every later batch of that shape (they never move, so a captured
    CUDA graph may keep pointing at them); :meth:`bind` loads a batch and its parameters.
    """

    def __init__(self, backend: "ClosedFormBackend", R: int, B: int, dtype, device):
        self.backend = backend
        widths = [backend.spec.layers[u.layer_index].out_features for u in backend.units]
        N = len(widths) - 1  # value nodes
        sizes = [R * B * h for h in widths]
        n_h = sum(sizes[:-1])
        kw = dict(dtype=dtype, device=device)
        S, Z, E = (torch.empty(n_h + sizes[-1], **kw) for _ in range(3))
        act = backend.pre[1]  # f of every latent (None: identity)
        A = torch.empty(n_h, **kw) if act is not None else None
        P = torch.empty(n_h, **kw)

        def blocks(flat, n):
            return [v.view(R, B, h) for v, h in zip(flat.split(sizes[:n]), widths[:n])]

        self.R, self.N = R, N
        self._S_b, self._Z_b, self._E_b = blocks(S, N + 1), blocks(Z, N + 1), blocks(E, N + 1)
        self._A_b = blocks(A, N) if A is not None else self._S_b[:N]
        self._P_b = blocks(P, N)
        self.latents = self._S_b[:N]
        self._X, self._A, self._P, self._E, self._E_h, self._S, self._Z = S[:n_h], A, P, E, E[:n_h], S, Z
        self._act = act
        self._act_out, self._act_back_out = _OUT_FORMS.get(backend.units[1].pre_act) or (None, None)
        # per-run rates broadcast over X: flat for R = 1, one view when all nodes have the same width
        if R == 1:
            self._X_runs = S[:n_h]
        elif len(set(widths[:N])) == 1:
            self._X_runs = S[:n_h].view(N, R, -1)
        else:
            self._X_runs = [s.view(R, -1) for s in self._S_b[:N]]
        if R > 1:  # E² once, then per-run sums of each block as matrix-vector products (a batched dot
            # product, or a sum over short rows of many runs, is several times slower)
            self._sq = torch.empty_like(E)
            ones = {n: torch.ones(n, **kw) for n in set(s // R for s in sizes)}
            self._sq_rows = [(q.view(R, -1), ones[s // R]) for q, s in zip(self._sq.split(sizes), sizes)]
        self.unbind()

    def bind(self, params: Dict[str, Tensor], x0: Tensor, y: Tensor) -> "FusedSweep":
        """Load a batch: the parameters' GEMM operands, μ_1 and y, then the latents x = μ (§2.3)."""
        backend, N = self.backend, self.N
        bound = backend._bind(params)
        z0 = backend._first_z(bound, x0)
        S_b, A_b = self._S_b, self._A_b
        # unit k reads node k−1's activation and writes block k of Z; its error block k goes down into P
        self._fwd = [(A_b[k - 1], bound[k][1], bound[k][2], self._Z_b[k]) for k in range(1, N + 1)]
        self._bwd = [(self._E_b[k], bound[k][0], self._P_b[k - 1]) for k in range(N, 0, -1)]
        self._x0 = x0
        self._Z_b[0].copy_(z0)
        S_b[0].copy_(z0)
        S_b[N].copy_(y)
        for k in range(1, N):
            a = S_b[k - 1] if self._A is None else self._activate(S_b[k - 1], A_b[k - 1])
            w_t, b = bound[k][1], bound[k][2]
            if b is None:
                torch.bmm(a, w_t, out=S_b[k])
            else:
                torch.baddbmm(b, a, w_t, out=S_b[k])
        return self

    def unbind(self) -> None:
        """Drop the references to the batch and its parameters (the buffers stay)."""
        self._fwd, self._bwd, self._x0 = [], [], None

    def _activate(self, v: Tensor, out: Tensor) -> Tensor:
        if self._act_out is not None:
            return self._act_out(v, out=out)
        return out.copy_(self._act.forward(v))

    def rate_view(self, eta: Tensor):
        """η [R] shaped to broadcast against X (one view per node when node widths differ)."""
        if self.R == 1:
            return eta
        if not isinstance(self._X_runs, list):
            return eta.view(1, -1, 1)
        return [eta.view(-1, 1)] * self.N

    def forward(self, first: bool = False) -> None:
        """E = [ε_1 … ε_N | y − ŷ] at the current latents; ``first``: the latents are μ, so every
        hidden ε is exactly 0 (engine spec §1.4) and is set so rather than left to rounding."""
        if self._A is not None:
            self._activate(self._X, self._A)
        for a, w_t, b, out in self._fwd:
            if b is None:
                torch.bmm(a, w_t, out=out)
            else:
                torch.baddbmm(b, a, w_t, out=out)
        torch.sub(self._S, self._Z, out=self._E)
        if first:
            self._E_h.zero_()

    def objective2(self) -> Tensor:
        """2F per run (for R = 1 one dot product, a 0-dim tensor) at the last ``forward``."""
        if self.R == 1:
            return torch.dot(self._E, self._E)
        torch.mul(self._E, self._E, out=self._sq)
        rows = self._sq_rows
        F = torch.mv(*rows[0])
        for q, ones in rows[1:]:
            F = torch.addmv(F, q, ones)
        return F

    def _block_sums(self, blocks) -> List[Tensor]:
        """Σ e² per run [R] of each of ``blocks`` (E blocks) at the last ``forward``."""
        if self.R == 1:
            return [torch.dot(e.view(-1), e.view(-1)).reshape(1) for e in blocks]
        return [torch.mv(e.view(self.R, -1) * e.view(self.R, -1), ones)
                for e, (_, ones) in zip(blocks, self._sq_rows[len(self._E_b) - len(blocks):])]

    def loss(self) -> Tensor:
        """ℓ per run [R] at the last ``forward``."""
        return 0.5 * self._block_sums(self._E_b[-1:])[0]

    def records(self):
        """(loss, energy, F) per run, [R] each, at the last ``forward`` (F = loss + energy: c = 1)."""
        sq = self._block_sums(self._E_b)
        loss = 0.5 * sq[-1]
        energy = sq[0]
        for s in sq[1:-1]:
            energy = energy + s
        energy = 0.5 * energy
        return loss, energy, loss + energy

    def descend(self, eta_b) -> None:
        """One latent SGD step of every node from the last ``forward``: X ← X − η ∂F/∂X."""
        for e, w, out in self._bwd:
            torch.bmm(e, w, out=out)
        P = self._P
        if self._act_back_out is not None:
            self._act_back_out(P, self._A, grad_input=P)
        elif self._act is not None:
            P.copy_(self._act.backward(P, self._X, self._A))
        torch.sub(self._E_h, P, out=P)
        x_runs = self._X_runs
        if not isinstance(x_runs, list):
            x_runs.addcmul_(eta_b, P.view(x_runs.shape), value=-1)
        else:
            self._step_per_node(eta_b)

    def run(self, n: int, eta: Tensor, eta_b, growth: Tensor, decay: Tensor, F_prev: Optional[Tensor]):
        """``n`` plain steps (forward, latent step, and with ``F_prev`` given the latent-rate rule:
        η ← η·(a if F < F_prev else d) in place); returns the last step's 2F (None without the rule).
        The same kernels as ``forward``/``objective2``/``descend``, without their per-call overhead."""
        X, A, P, S, Z, E, E_h, x_runs = self._X, self._A, self._P, self._S, self._Z, self._E, self._E_h, self._X_runs
        act_out, act_back_out, act = self._act_out, self._act_back_out, self._act
        fwd, bwd, bmm, baddbmm, sub, where = self._fwd, self._bwd, torch.bmm, torch.baddbmm, torch.sub, torch.where
        fast = act is None or act_back_out is not None
        single = not isinstance(x_runs, list)
        P_x = P.view(x_runs.shape) if single else None
        for _ in range(n):
            if A is not None:
                if act_out is not None:
                    act_out(X, out=A)
                else:
                    A.copy_(act.forward(X))
            for a, w_t, b, out in fwd:
                if b is None:
                    bmm(a, w_t, out=out)
                else:
                    baddbmm(b, a, w_t, out=out)
            sub(S, Z, out=E)
            F = None
            if F_prev is not None:
                F = self.objective2()
            for e, w, out in bwd:
                bmm(e, w, out=out)
            if not fast:
                P.copy_(act.backward(P, X, A))
            elif act is not None:
                act_back_out(P, A, grad_input=P)
            sub(E_h, P, out=P)
            if single:
                x_runs.addcmul_(eta_b, P_x, value=-1)
            else:
                self._step_per_node(eta_b)
            if F is not None:
                eta.mul_(where(F < F_prev, growth, decay))
                F_prev = F
        return F_prev

    def _step_per_node(self, eta_b) -> None:
        for x, e, g in zip(self._X_runs, eta_b, self._P.split([x.numel() for x in self._X_runs])):
            x.addcmul_(e, g.view(x.shape), value=-1)

    def weight_grads(self, need: Sequence[bool]) -> Dict[str, Tensor]:
        """∂F/∂θ of the units with ``need[k]`` at the last ``forward``, as ``evaluate`` forms them."""
        backend, grads = self.backend, {}
        for k, u in enumerate(backend.units):
            if not need[k]:
                continue
            ez = self._E_b[k]
            grads[f"{u.layer_index}.weight"] = backend._weight_grad(ez, self._x0 if k == 0 else self._A_b[k - 1])
            if u.bias:
                grads[f"{u.layer_index}.bias"] = ez.sum(dim=1).neg_()
        return grads


class ClosedFormBackend:
    """Closed-form F and gradients of a Linear stack.

    ``energy_coef`` c and ``latent_l1`` λ ([R] each) are read on the host for the static choices
    (c = 1 everywhere, λ = 0 everywhere: terms skipped) and moved to ``device``; give host tensors
    (the Engine does) so that building a backend never waits for the device."""

    def __init__(self, spec: NetworkSpec, loss: str, energy_coef: Tensor, dtype, device,
                 latent_l1: Optional[Tensor] = None, run_last: bool = False):
        if spec.has_connectivity:
            raise ValueError("connectivity masks S (node_connectivity) need the functional backend")
        self.spec = spec
        self.units = compile_units(spec)
        self.pre = [activations.activation(u.pre_act) if u.pre_act else None for u in self.units]
        self.post = [activations.activation(u.post_act) if u.post_act else None for u in self.units]
        self.loss = loss
        self.c_is_one = bool((host_values(energy_coef) == 1).all())
        self.c_flat = on_device(energy_coef, dtype, device)
        self.c = self.c_flat.reshape(-1, 1, 1)
        self.l1_flat = on_device(active_penalty(latent_l1), dtype, device)  # λ Σ|x| per run, or None
        self.l1 = None if self.l1_flat is None else self.l1_flat.reshape(-1, 1, 1)
        node_units = [k for k, u in enumerate(self.units) if u.ends_in_node]
        self.node_of_unit = {k: n for n, k in enumerate(node_units)}
        self._lowest_node_unit = min(node_units + [len(self.units)])
        self.node_masks = [spec.node_mask_tensor(n, dtype, device) for n in range(len(node_units))]
        self._w_names = [f"{u.layer_index}.weight" for u in self.units]
        self._b_names = [f"{u.layer_index}.bias" if u.bias else None for u in self.units]
        self._all_names = self._w_names + [n for n in self._b_names if n]
        self._bound_src: list = []
        self._bound: list = []
        self._cache_key = None
        self._cache = None
        self.run_last = run_last
        self._ones: Dict[int, Tensor] = {}
        self._sweeps: Dict[tuple, "FusedSweep"] = {}  # fused-sweep buffers per (R, B, dtype, device)
        # the most recently used sweeps kept (batch sizes vary: a last partial batch); None keeps all,
        # as a captured CUDA graph needs: it writes the buffers of its sweep at every replay
        self.max_sweeps: Optional[int] = 4
        self._sums: Dict[tuple, Tensor] = {}

    # -- plumbing -----------------------------------------------------------------------------------
    def unit_param_names(self, k: int) -> List[str]:
        u = self.units[k]
        names = [f"{u.layer_index}.weight"]
        if u.bias:
            names.append(f"{u.layer_index}.bias")
        return names

    def _bind(self, params: Dict[str, Tensor]) -> list:
        """Per unit (W, Wᵀ view, bias as [R, 1, out] or None, and for the run-last layout the rows
        of Wᵀ and of W as [R, 1, n] views), rebuilt only when a parameter changed."""
        src = [params[n] for n in self._all_names]
        if len(src) != len(self._bound_src) or not all(map(operator.is_, src, self._bound_src)):
            bound = []
            for w, b in zip(self._w_names, self._b_names):
                w, w_t = params[w], params[w].transpose(1, 2)
                rows = (w_t.split(1, dim=1), w.split(1, dim=1)) if self.run_last else (None, None)
                bound.append((w, w_t, params[b].unsqueeze(1) if b else None, *rows))
            self._bound = bound
            self._bound_src = src
        return self._bound

    def rsum(self, t: Tensor) -> Tensor:
        """Per-run sum of a [R, ...] tensor over every other axis: a reduction over outer axes in
        the run-last layout, else a matrix-vector product with a cached ones vector (a plain
        ``sum`` over small trailing axes of many runs is several times slower)."""
        if self.run_last:
            return t.sum(dim=tuple(range(1, t.ndim)))
        flat = t.reshape(t.shape[0], -1)
        ones = self._ones.get(flat.shape[1])
        if ones is None or ones.dtype != flat.dtype or ones.device != flat.device:
            ones = self._ones[flat.shape[1]] = torch.ones(flat.shape[1], dtype=flat.dtype, device=flat.device)
        return torch.mv(flat, ones)

    def _linear(self, bound: tuple, a: Tensor) -> Tensor:
        """z = a Wᵀ + b for a [R, B, in] or a shared [B, in] batch."""
        w, w_t, b, w_t_rows, _ = bound
        if self.run_last:
            return self._contract(a, w_t_rows, w, b)
        if a.ndim == 3:
            return torch.bmm(a, w_t) if b is None else torch.baddbmm(b, a, w_t)
        z = torch.matmul(a, w_t)  # a shared [B, in] batch
        return z if b is None else z + b

    @staticmethod
    def _contract(a: Tensor, rows: Sequence[Tensor], m_t: Tensor, base: Optional[Tensor],
                  sign: int = 1) -> Tensor:
        """base + sign · a M for the run-last layout, M [R, K, N] given as its K rows ([R, 1, N]
        views) and as its transpose m_t [R, N, K]: K multiply-adds over [R, B, N] when K is small,
        else one multiply-and-sum per output unit when N is small, else a batched matmul."""
        K, N = len(rows), rows[0].shape[-1]
        if K > UNROLL_K and N > UNROLL_K:  # not a tiny layer: a plain batched product
            out = torch.matmul(a, m_t.transpose(1, 2))
            return out if base is None else (base + out if sign == 1 else base - out)
        if K <= UNROLL_K:
            cols = a.split_with_sizes(_ONES[K], dim=-1)  # split() has a slow Python wrapper
            if base is None:
                out = cols[0] * rows[0] if sign == 1 else cols[0] * rows[0].neg()
                start = 1
            else:
                out, start = base, 0
            for k in range(start, K):
                out = torch.addcmul(out, cols[k], rows[k], value=sign)
            return out
        lead = a.shape[:-1] if a.ndim == 3 else (m_t.shape[0], *a.shape[:-1])
        out = empty_run_last((*lead, N), m_t)
        for j, m_j in enumerate(m_t.split(1, dim=1)):  # [R, 1, K]
            torch.sum(a * m_j, dim=-1, out=out[..., j])
        if sign != 1:
            out = out.neg_()
        return out if base is None else base + out

    def _down(self, bound: tuple, ez: Tensor, base: Optional[Tensor] = None) -> Tensor:
        """ez W (the error sent down), or base − ez W when ``base`` is given."""
        w, w_t, _, _, w_rows = bound
        if self.run_last:
            return self._contract(ez, w_rows, w_t, base, sign=1 if base is None else -1)
        e_in = torch.bmm(ez, w) if ez.ndim == 3 and w.ndim == 3 else torch.matmul(ez, w)
        return e_in if base is None else base - e_in

    def _weight_grad(self, ez: Tensor, a: Tensor) -> Tensor:
        """−ezᵀ a summed over the batch, [R, out, in]."""
        if self.run_last:
            B = ez.shape[-2]
            a3 = a if a.ndim == 3 else a.unsqueeze(0)
            if B == 1:
                return ez.transpose(1, 2) * a3.neg()
            if B <= UNROLL_K:
                ezs, as_ = ez.split(1, dim=1), a3.split(1, dim=1)
                g = ezs[0].transpose(1, 2) * as_[0].neg()
                for e_b, a_b in zip(ezs[1:], as_[1:]):
                    g = torch.addcmul(g, e_b.transpose(1, 2), a_b, value=-1)
                return g
        # the sign goes on the smaller operand (rounding is sign-symmetric: the same bits either way)
        if ez.shape[-2] < a.shape[-1]:
            ez_t = ez.neg().transpose(1, 2)
            return torch.matmul(ez_t, a) if a.ndim == 2 else torch.bmm(ez_t, a)
        if a.ndim == 2:  # the shared batch input
            return torch.matmul(ez.transpose(1, 2), a).neg_()
        return torch.bmm(ez.transpose(1, 2), a).neg_()

    def _first_z(self, bound: list, x0: Tensor) -> Tensor:
        """z of unit 0 for the batch input, cached while its weights and the batch are unchanged."""
        if self.pre[0] is not None:
            return self._linear(bound[0], self.pre[0].forward(x0))
        # The key holds the tensors themselves (compared by identity, so no id can be reused) and
        # their version counters (so an input buffer or weight changed in place is noticed).
        tensors = (x0, bound[0][0], bound[0][2])
        versions = tuple(-1 if t is None else t._version for t in tensors)
        cached = self._cache_key
        if cached is None or cached[1] != versions or any(a is not b for a, b in zip(cached[0], tensors)):
            self._cache = self._linear(bound[0], x0)
            self._cache_key = (tensors, versions)
        return self._cache

    def _fused_objective(self, d: Tensor, d_m: Tensor, eps_pairs: List[tuple], latents: Sequence[Tensor]):
        """(loss, energy, F) per run for the squared error from one reduction (engine spec §4.2 item 1:
        the energies come free from ε): the output error d = y − ŷ and every ε are laid side by side
        per run, squared (masked: d ⊙ M⊙d, ε ⊙ M⊙ε), and one product with a [N, 3] matrix of ½ sums
        the loss, the energy and (c = 1) F at once; a handful of kernels instead of three per term."""
        R = d.shape[0]
        flat = [d.reshape(R, -1)] + [eps.reshape(R, -1) for eps, _ in eps_pairs]
        flat_m = [d_m.reshape(R, -1)] + [eps_m.reshape(R, -1) for _, eps_m in eps_pairs]
        masked = d_m is not d or any(eps_m is not eps for eps, eps_m in eps_pairs)
        a = torch.cat(flat, dim=1) if len(flat) > 1 else flat[0]
        b = (torch.cat(flat_m, dim=1) if len(flat_m) > 1 else flat_m[0]) if masked else a
        sums = torch.mm(a * b, self._half_sums(flat[0].shape[1], a.shape[1], a))  # [R, 3]
        loss, energy = sums[:, 0], sums[:, 1]
        if self.c_is_one and self.l1 is None:
            return loss, energy, sums[:, 2], sums
        objective = sums[:, 2] if self.c_is_one else torch.addcmul(loss, self.c_flat, energy)
        if self.l1 is not None:
            objective = objective + self.l1_flat * sum(self.rsum(x.abs()) for x in latents)
        return loss, energy, objective, None

    def _half_sums(self, n_out: int, n: int, like: Tensor) -> Tensor:
        """The cached [n, 3] matrix whose columns sum ½ · (output part, energy part, everything); kept as
        a contiguous [3, n] and handed over transposed (a GEMM over contiguous rows, ~2.5x faster on CPU)."""
        key = (n_out, n, like.dtype, like.device)
        m = self._sums.get(key)
        if m is None:
            m = torch.zeros(3, n, dtype=like.dtype, device=like.device)
            m[0, :n_out] = 0.5
            m[1, n_out:] = 0.5
            m[2] = 0.5
            self._sums[key] = m
        return m.t()

    def reset(self) -> None:
        """Forget the bound views and the cached first-layer product."""
        self._bound_src, self._bound = [], []
        self._cache_key = self._cache = None

    def release(self, params: Dict[str, Tensor]) -> None:
        """Drop the bound views and the cached first-layer product unless they belong to ``params``
        (called at the end of a batch: after a weight step they hold the previous parameters)."""
        current = [params[n] for n in self._all_names]
        if len(current) != len(self._bound_src) or not all(map(operator.is_, current, self._bound_src)):
            self._bound_src, self._bound = [], []
        for sweep in self._sweeps.values():
            sweep.unbind()
        key = self._cache_key
        w0, b0 = params[self._w_names[0]], params[self._b_names[0]] if self._b_names[0] else None
        if key is not None and (key[0][1] is not w0 or key[0][2] is not b0):
            self._cache_key = self._cache = None

    def fusable(self) -> bool:
        """Whether :class:`FusedSweep` applies to this net (structure only; the engine adds the
        schedule, the optimiser and the batch conditions)."""
        units = self.units
        return (not self.run_last and self.loss == "sse" and self.c_is_one and self.l1 is None
                and len(units) >= 2 and all(u.ends_in_node for u in units[:-1])
                and all(m is None for m in self.node_masks)
                and self.pre[0] is None and all(p is None for p in self.post)
                and len({u.pre_act for u in units[1:]}) == 1)

    def fused_sweep(self, params: Dict[str, Tensor], x0: Tensor, y: Tensor) -> FusedSweep:
        """The fused sweep of this batch shape, bound to the batch (latents at the feed-forward values).
        Its buffers are kept for later batches of the same shape (``max_sweeps`` shapes at most)."""
        w0 = params[self._w_names[0]]
        B = x0.shape[0] if x0.ndim == 2 else x0.shape[1]
        key = (w0.shape[0], B, w0.dtype, w0.device)
        sweep = self._sweeps.pop(key, None)
        if sweep is None:
            sweep = FusedSweep(self, *key)
            if self.max_sweeps is not None and len(self._sweeps) >= self.max_sweeps:
                del self._sweeps[next(iter(self._sweeps))]  # the least recently used
        self._sweeps[key] = sweep  # most recent last
        return sweep.bind(params, x0, y)

    # -- engine interface ---------------------------------------------------------------------------
    def feedforward_latents(self, params: Dict[str, Tensor], x0: Tensor) -> List[Tensor]:
        latents = []
        bound = self._bind(params)
        v = x0
        for k, u in enumerate(self.units[:-1]):
            if k == 0:
                z = self._first_z(bound, x0)
            else:
                z = self._linear(bound[k], self.pre[k].forward(v) if self.pre[k] else v)
            v = self.post[k].forward(z) if self.post[k] else z
            if u.ends_in_node:
                latents.append(v.detach().clone())
        return latents

    def evaluate(self, params: Dict[str, Tensor], latents: Sequence[Tensor], x0: Tensor, y: Tensor,
                 need_weights: Sequence[bool], need_objective: bool = True,
                 output_mask: Optional[Tensor] = None) -> Evaluation:
        """F and its gradients at (latents, params).

        Errors are carried with the spec's sign, e = −∂F/∂(unit output), so each hidden layer costs
        one GEMM, one fused activation-derivative product and one subtraction on the way down.
        ``need_objective=False`` skips the loss and energy sums (they are then None).
        ``y``/``output_mask``: the clean target and expanded mask of :func:`clean_target`.
        """
        units = self.units
        n_units = len(units)
        bound = self._bind(params)
        saved = []  # per unit: (input v, pre-activation output a, z, post output)
        errors: Dict[int, Tensor] = {}  # node index -> e_l = c·M⊙ε_l
        eps_pairs: Dict[int, tuple] = {}  # node index -> (ε_l, M⊙ε_l)
        v = x0
        for k, u in enumerate(units):
            a = self.pre[k].forward(v) if self.pre[k] is not None else v
            z = self._first_z(bound, x0) if k == 0 else self._linear(bound[k], a)
            out = self.post[k].forward(z) if self.post[k] is not None else z
            saved.append((v, a, z, out))
            if u.ends_in_node:
                n = self.node_of_unit[k]
                eps = latents[n] - out
                mask = self.node_masks[n]
                eps_m = eps if mask is None else mask * eps
                eps_pairs[n] = (eps, eps_m)
                errors[n] = eps_m if self.c_is_one else self.c * eps_m
                v = latents[n]
            else:
                v = out
        loss = energy = objective = stacked = None
        if need_objective and not self.run_last and self.loss == "sse":
            e_out = y - v if output_mask is None else output_mask * (y - v)
            loss, energy, objective, stacked = self._fused_objective(y - v if output_mask is not None else e_out, e_out,
                                                            list(eps_pairs.values()), latents)
        elif need_objective:
            loss, e_out = output_error(v, y, self.loss, output_mask, self.rsum)
            energy = None
            for eps, eps_m in eps_pairs.values():  # ½ Σ M⊙ε² with a 0/1 mask M
                e_n = 0.5 * self.rsum(eps_m * eps)
                energy = e_n if energy is None else energy + e_n
            if energy is None:
                energy = torch.zeros_like(loss)
            objective = loss + (energy if self.c_is_one else self.c_flat * energy)
            if self.l1 is not None:
                objective = objective + self.l1_flat * sum(self.rsum(x.abs()) for x in latents)
        else:
            e_out = output_error_only(v, y, self.loss, output_mask)

        latent_grads: List[Optional[Tensor]] = [None] * len(latents)
        weight_grads: Dict[str, Tensor] = {}
        e = e_out  # −∂F/∂(output of the current unit)
        lowest_needed = min([k for k in range(n_units) if need_weights[k]] + [n_units])
        lowest_node_unit = self._lowest_node_unit
        for k in range(n_units - 1, -1, -1):
            u = units[k]
            v_in, a, z, out = saved[k]
            ez = self.post[k].backward(e, z, out) if self.post[k] is not None else e
            if need_weights[k]:
                weight_grads[f"{u.layer_index}.weight"] = self._weight_grad(ez, a)
                if u.bias:
                    weight_grads[f"{u.layer_index}.bias"] = ez.sum(dim=1).neg_()
            if k == 0 or (k - 1 < lowest_node_unit and k - 1 < lowest_needed):
                break  # nothing below needs this error
            below_node = units[k - 1].ends_in_node
            if below_node and self.pre[k] is None:  # ∂F/∂x = e_l − e_{l+1}W_{l+1} in one pass
                n = self.node_of_unit[k - 1]
                latent_grads[n] = self._down(bound[k], ez, errors[n])
                if self.l1 is not None:
                    latent_grads[n] = latent_grads[n] + self.l1 * latents[n].sign()
                e = errors[n]
                continue
            e_in = self._down(bound[k], ez)
            if self.pre[k] is not None:
                e_in = self.pre[k].backward(e_in, v_in, a)
            if below_node:
                n = self.node_of_unit[k - 1]
                latent_grads[n] = errors[n] - e_in  # ∂F/∂x = e_l − f'(x_l)⊙(e_{l+1}W_{l+1}) + ∂R/∂x
                if self.l1 is not None:
                    latent_grads[n] = latent_grads[n] + self.l1 * latents[n].sign()
                e = errors[n]
            else:
                e = e_in
        return Evaluation(loss, energy, objective, latent_grads, weight_grads, stacked)
