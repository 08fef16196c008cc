"""GeneRec and Almeida–Pineda (pcneuro.engine.recurrent, theory spec §8): hand-worked steps, the in-place
ascending sweep, both phases, persistent states, the row-vector convention on non-square layers, and
the per-run rates of stacked runs."""
import math

import numpy as np
import pytest
import torch

from pcneuro.engine.recurrent import AlmeidaPineda, GeneRec, ap_adjoint_relax, generec_relax, rate_tensor
from pcneuro.engine.activations import activation

DT = torch.float64


def scalars(*values):
    """One run, one sample, one unit per layer: [1, 1, 1] tensors."""
    return [torch.tensor(v, dtype=DT).reshape(1, 1, 1) for v in values]


def values(tensors):
    return [float(t.reshape(-1)[0]) for t in tensors]


# -- hand-worked steps: a 1-1-1-1 chain, W = (2, 0.5, -1), states x = (1, 0.5, -1, 2), gamma = 0.1 ------------
W = (2.0, 0.5, -1.0)
X = (1.0, 0.5, -1.0, 2.0)


def test_generec_minus_sweep_by_hand_is_in_place_and_ascending():
    """Identity f (f' = 1), one sweep over layers 1, 2, 3; each layer sees the already updated layer
    below it and the not yet updated layer above it:
      x1 = 0.5 + 0.1(-0.5 + 1*2 + (-1)*0.5)    = 0.6
      x2 = -1 + 0.1(1 + 0.6*0.5 + 2*(-1))      = -1.07
      x3 = 2 + 0.1(-2 + (-1.07)*(-1))          = 1.907   (top: no feedback term)"""
    gr = GeneRec(scalars(*W), scalars(*X), lr=0.1, rate=0.1, steps=1, activation_name="identity")
    np.testing.assert_allclose(values(gr.minus_phase()), [1.0, 0.6, -1.07, 1.907], rtol=0, atol=1e-15)


def test_generec_update_by_hand_both_phases():
    """Minus phase as above; plus phase clamps x3 to y = 0.5 and relaxes layers 1, 2 from x-:
      x1+ = 0.6 + 0.1(-0.6 + 1*2 + (-1.07)*0.5)         = 0.6865
      x2+ = -1.07 + 0.1(1.07 + 0.6865*0.5 + 0.5*(-1))   = -0.978675
    Delta W_l = f(x_l+) f(x_l+1+) - f(x_l-) f(x_l+1-); W += 0.1 * Delta W / 1."""
    gr = GeneRec(scalars(*W), scalars(*X), lr=0.1, rate=0.1, steps=1, activation_name="identity")
    s, y = scalars(1.0, 0.5)
    record = gr.train_batch(s, y)
    minus, plus = (1.0, 0.6, -1.07, 1.907), (1.0, 0.6865, -0.978675, 0.5)
    np.testing.assert_allclose(values(gr.x), plus, rtol=0, atol=1e-15)  # the states persist at x+
    delta = [plus[l] * plus[l + 1] - minus[l] * minus[l + 1] for l in range(3)]
    np.testing.assert_allclose(values(gr.weights), [w + 0.1 * d for w, d in zip(W, delta)], rtol=0, atol=1e-15)
    np.testing.assert_allclose(delta[0], 0.0865, atol=1e-15)
    assert float(record.output) == pytest.approx(1.907, abs=1e-15)  # the minus-phase output, before the step
    assert float(record.loss) == pytest.approx(0.5 * (0.5 - 1.907) ** 2, abs=1e-15)


def test_generec_tanh_sweep_by_hand():
    """f = tanh: x_l += g(-x_l + f'(x_l)[f(x_l-1) W_l-1 + f(x_l+1) W_l]), f' = 1 - tanh^2, f on the input too."""
    t, d = math.tanh, lambda v: 1 - math.tanh(v) ** 2
    x0, x1, x2, x3 = X
    x1 = x1 + 0.1 * (-x1 + d(x1) * (t(x0) * W[0] + t(x2) * W[1]))
    x2 = x2 + 0.1 * (-x2 + d(x2) * (t(x1) * W[1] + t(x3) * W[2]))
    x3 = x3 + 0.1 * (-x3 + d(x3) * (t(x2) * W[2]))
    gr = GeneRec(scalars(*W), scalars(*X), lr=0.1, rate=0.1, steps=1)
    np.testing.assert_allclose(values(gr.minus_phase()), [x0, x1, x2, x3], rtol=0, atol=1e-15)


def test_almeida_pineda_update_by_hand():
    """Identity f. Free phase (no f', no top feedback): x = (1, 0.6, -1.07, 1.907) as GeneRec's sweep.
    Adjoint phase, J = y - x3 = 0.5 - 1.907 = -1.407, a starting as a copy of the initial states
    (1, 0.5, -1, 2), layers 0 … 3 in place:
      a0 = 1 + 0.1(-1 + a1*W0)                   = 1
      a1 = 0.5 + 0.1(-0.5 + a0*W0 + a2*W1)       = 0.6
      a2 = -1 + 0.1(1 + a1*W1 + a3*W2)           = -1.07
      a3 = 2 + 0.1(-2 + J)                       = 1.6593
    Delta W_l = f(x_l) a_l+1: (0.6, 0.6*(-1.07), -1.07*1.6593); W += 0.1 * Delta W."""
    ap = AlmeidaPineda(scalars(*W), scalars(*X), lr=0.1, rate=0.1, steps=1, activation_name="identity")
    s, y = scalars(1.0, 0.5)
    record = ap.train_batch(s, y)
    x = (1.0, 0.6, -1.07, 1.907)
    a = (1.0, 0.6, -1.07, 2 + 0.1 * (-2 - 1.407))
    np.testing.assert_allclose(values(ap.x), x, rtol=0, atol=1e-15)
    np.testing.assert_allclose(values(ap.a), a, rtol=0, atol=1e-15)
    np.testing.assert_allclose(a[3], 1.6593, atol=1e-15)
    np.testing.assert_allclose(values(ap.weights), [W[l] + 0.1 * x[l] * a[l + 1] for l in range(3)], rtol=0,
                               atol=1e-15)
    assert float(record.output) == pytest.approx(1.907, abs=1e-15)


def test_published_variants_skip_the_free_phase_by_hand():
    """free_phase=False (spec §10 #5), identity f, y = 0.5, one sweep.
    GeneRec: no minus phase; x3 := 0.5, x1 = 0.5 + 0.1(-0.5 + 2 - 0.5) = 0.6,
    x2 = -1 + 0.1(1 + 0.6*0.5 + 0.5*(-1)) = -0.92; Delta W_l = x_l+ x_l+1+ (plus term only).
    AP: the states stay (1, 0.5, -1, 2), J = 0.5 - 2 = -1.5; a = (1, 0.6, -1.07, 2 + 0.1(-2 - 1.5) = 1.65);
    Delta W_l = x_l a_l+1."""
    s, y = scalars(1.0, 0.5)
    gr = GeneRec(scalars(*W), scalars(*X), lr=0.1, rate=0.1, steps=1, activation_name="identity", free_phase=False)
    gr.train_batch(s, y)
    plus = (1.0, 0.6, -0.92, 0.5)
    np.testing.assert_allclose(values(gr.x), plus, rtol=0, atol=1e-15)
    np.testing.assert_allclose(values(gr.weights), [W[l] + 0.1 * plus[l] * plus[l + 1] for l in range(3)], rtol=0,
                               atol=1e-15)
    ap = AlmeidaPineda(scalars(*W), scalars(*X), lr=0.1, rate=0.1, steps=1, activation_name="identity",
                       free_phase=False)
    record = ap.train_batch(s, y)
    a = (1.0, 0.6, -1.07, 1.65)
    np.testing.assert_allclose(values(ap.x), X, rtol=0, atol=0)
    np.testing.assert_allclose(values(ap.a), a, rtol=0, atol=1e-15)
    np.testing.assert_allclose(values(ap.weights), [W[l] + 0.1 * X[l] * a[l + 1] for l in range(3)], rtol=0,
                               atol=1e-15)
    assert float(record.loss) == pytest.approx(0.5 * 1.5 ** 2)


def test_almeida_pineda_adjoint_uses_f_prime_of_the_fixed_states():
    """f = tanh: f'(x_l) multiplies both neighbour terms of layers 0 < l < L, only the feedback at l = 0,
    none at the top (J only)."""
    d = lambda v: 1 - math.tanh(v) ** 2  # noqa: E731
    x, a0, J = X, (0.3, -0.2, 0.7, 0.1), 0.25
    a = list(a0)
    a[0] = a[0] + 0.1 * (-a[0] + d(x[0]) * a[1] * W[0])
    a[1] = a[1] + 0.1 * (-a[1] + d(x[1]) * (a[0] * W[0] + a[2] * W[1]))
    a[2] = a[2] + 0.1 * (-a[2] + d(x[2]) * (a[1] * W[1] + a[3] * W[2]))
    a[3] = a[3] + 0.1 * (-a[3] + J)
    got = ap_adjoint_relax(scalars(*W), scalars(*x), scalars(*a0), scalars(J)[0], 1, rate_tensor(0.1, 1, DT, "cpu"),
                           activation("tanh"))
    np.testing.assert_allclose(values(got), a, rtol=0, atol=1e-15)


# -- matrices: row convention, non-square layers, batch sums / B, per-run rates, persistence -------------------
def numpy_reference(rule, W, x, a, s, y, lr, rate, steps, updates):
    """An independent loop over runs (numpy, explicit tanh and 1 - tanh^2) of ``updates`` updates."""
    f = np.tanh
    fp = lambda v: 1 - np.tanh(v) ** 2  # noqa: E731
    W = [w.copy() for w in W]
    x = [v.copy() for v in x]
    a = [v.copy() for v in a]
    L = len(W)
    for _ in range(updates):
        for r in range(s.shape[0]):
            x[0][r] = s[r]

        def sweep(r, layers, with_fp):
            for l in layers:
                drive = f(x[l - 1][r]) @ W[l - 1][r]
                if l < L:
                    drive = drive + f(x[l + 1][r]) @ W[l][r].T
                x[l][r] = x[l][r] + rate[r] * (-x[l][r] + (fp(x[l][r]) * drive if with_fp else drive))

        for r in range(s.shape[0]):
            B = s.shape[1]
            if rule == "gr":
                for _ in range(steps):
                    sweep(r, range(1, L + 1), True)
                minus = [v[r].copy() for v in x]
                x[L][r] = y[r]
                for _ in range(steps):
                    sweep(r, range(1, L), True)
                plus = [v[r] for v in x]
                for l in range(L):
                    W[l][r] = W[l][r] + lr[r] / B * (f(plus[l]).T @ f(plus[l + 1]) - f(minus[l]).T @ f(minus[l + 1]))
            else:
                for _ in range(steps):
                    sweep(r, range(1, L + 1), False)
                J = y[r] - x[L][r]
                for _ in range(steps):
                    for l in range(L + 1):
                        if l == L:
                            drive = J
                        else:
                            drive = a[l + 1][r] @ W[l][r].T
                            if l > 0:
                                drive = drive + a[l - 1][r] @ W[l - 1][r]
                            drive = fp(x[l][r]) * drive
                        a[l][r] = a[l][r] + rate[r] * (-a[l][r] + drive)
                for l in range(L):
                    W[l][r] = W[l][r] + lr[r] / B * (f(x[l][r]).T @ a[l + 1][r])
    return W, x, a


@pytest.mark.parametrize("rule", ["gr", "ap"])
def test_stacked_runs_match_a_per_run_loop_on_non_square_layers(rule):
    gen = torch.Generator().manual_seed(7)
    sizes, R, B = (3, 2, 4, 2), 3, 2
    W = [torch.randn(R, sizes[l], sizes[l + 1], generator=gen, dtype=DT) * 0.7 for l in range(3)]
    x = [torch.randn(R, B, n, generator=gen, dtype=DT) for n in sizes]
    s = torch.randn(R, B, sizes[0], generator=gen, dtype=DT)
    y = torch.randn(R, B, sizes[-1], generator=gen, dtype=DT)
    lr, rate = [0.05, 0.2, 0.1], [0.1, 0.05, 0.2]
    cls = GeneRec if rule == "gr" else AlmeidaPineda
    learner = cls(W, x, lr=torch.tensor(lr, dtype=DT), rate=torch.tensor(rate, dtype=DT), steps=3)
    for _ in range(2):  # two updates: the states (and AP's adjoints) persist between them
        learner.train_batch(s, y)
    npy = lambda ts: [t.numpy() for t in ts]  # noqa: E731
    ref_W, ref_x, ref_a = numpy_reference(rule, npy(W), npy(x), npy(x), s.numpy(), y.numpy(), lr, rate, 3, 2)
    for got, want in zip(learner.weights, ref_W):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-13)
    for got, want in zip(learner.x, ref_x):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-13)
    if rule == "ap":
        for got, want in zip(learner.a, ref_a):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-13)
    else:
        np.testing.assert_array_equal(learner.x[-1].numpy(), y.numpy())  # the plus phase leaves the target


def test_the_caller_tensors_are_never_written():
    weights, states = scalars(*W), scalars(*X)
    gr = GeneRec(weights, states, lr=0.1, rate=0.1, steps=2)
    gr.train_batch(*scalars(1.0, 0.5))
    assert values(weights) == list(W) and values(states) == list(X)


def test_generec_relax_leaves_clamped_layers_alone():
    x = scalars(*X)
    out = generec_relax(scalars(*W), x, [2], 5, rate_tensor(0.1, 1, DT, "cpu"), activation("tanh"))
    assert values(out)[0] == X[0] and values(out)[1] == X[1] and values(out)[3] == X[3] and values(out)[2] != X[2]


@pytest.mark.parametrize("make, match", [
    (lambda: GeneRec(scalars(*W), scalars(*X[:3]), lr=0.1), "need 4 state layers"),
    (lambda: GeneRec([torch.zeros(1, 2, 1, dtype=DT), *scalars(*W[1:])], scalars(*X), lr=0.1), "W_0 has shape"),
    (lambda: GeneRec(scalars(*W), scalars(*X), lr=0.1, steps=0), "steps=0"),
    (lambda: AlmeidaPineda(scalars(*W), scalars(*X), lr=[0.1, 0.2]), "per-run rate"),
    (lambda: GeneRec(scalars(*W), scalars(*X), lr=0.1).train_batch(torch.zeros(1, 1, 2, dtype=DT),
                                                                   torch.zeros(1, 1, 1, dtype=DT)), "input has shape"),
])
def test_bad_shapes_and_settings_raise_one_line(make, match):
    with pytest.raises(ValueError, match=match) as info:
        make()
    assert "\n" not in str(info.value)
