"""PGD: closed-form optimum on linear models, the threat-model bound, side-effect freedom,
autocast/channels_last, and agreement with torchattacks on a small trained CNN."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_zoo.attacks import (L2Step, LinfStep, correct_under_attack, default_step_size, pgd,
                                robust_accuracy)
from zoo import assert_same_state, model_state, small_cnn


def _images(n: int = 6, size: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    x[:, 0, :4] = 0.0      # saturated pixels: the [0, 1] clamp must be active somewhere
    x[:, 1, :4] = 1.0
    return x, torch.randint(0, 5, (n,), generator=g)


def _delta_norm(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    d = (x_adv.double() - x.double()).flatten(1)
    return d.norm(dim=1) if norm == "l2" else d.abs().amax(dim=1)


# -- (1) closed form: binary linear classifier ------------------------------------------------

@pytest.mark.parametrize("norm,eps,dual", [("l2", 0.1, 2), ("linf", 0.01, 1)])
@pytest.mark.parametrize("targeted", [False, True])
def test_linear_model_reaches_closed_form_optimum(norm, eps, dual, targeted):
    # For logits Wx+b with two classes, CE is a decreasing function of the margin
    # m(x) = (w_y - w_o)·x + (b_y - b_o); the optimal δ in the ε-ball lowers m by
    # ε‖w_y - w_o‖ in the dual norm (L2 → L2, Linf → L1). x = 0.5 ± 0.05 keeps the
    # [0, 1] clamp inactive.
    torch.manual_seed(0)
    lin = nn.Linear(48, 2)
    model = nn.Sequential(nn.Flatten(), lin)
    x = 0.5 + 0.05 * (2 * torch.rand(8, 3, 4, 4) - 1)
    y = torch.randint(0, 2, (8,))
    w = lin.weight[y] - lin.weight[1 - y]                                   # (8, 48)

    def margin(z):
        logits = model(z)
        return (logits.gather(1, y[:, None]) - logits.gather(1, 1 - y[:, None])).squeeze(1)

    # targeted at the other class reaches the same optimum
    labels = 1 - y if targeted else y
    x_adv = pgd(model, x, labels, norm=norm, eps=eps, steps=10, targeted=targeted)
    with torch.no_grad():
        drop = margin(x) - margin(x_adv)
    expected = eps * torch.linalg.vector_norm(w, ord=dual, dim=1).detach()
    torch.testing.assert_close(drop, expected, rtol=1e-4, atol=1e-6)
    assert 0 < x_adv.min() and x_adv.max() < 1


def test_keep_best_returns_the_highest_loss_iterate():
    model = small_cnn(dropout=0.3).eval()
    x, y = _images(8)
    kw = dict(norm="l2", eps=2.0, steps=4, step_size=3.0)   # overshooting steps: losses oscillate
    best = pgd(model, x, y, keep_best=True, **kw)
    last = pgd(model, x, y, keep_best=False, **kw)
    with torch.no_grad():
        ce = lambda z: F.cross_entropy(model(z), y, reduction="none")  # noqa: E731
        l_best, l_last, l_clean = ce(best), ce(last), ce(x)
    assert (l_best >= l_last - 1e-6).all() and (l_best >= l_clean - 1e-6).all()
    assert (l_best > l_clean).any()


def test_zero_eps_or_steps_returns_a_copy_of_x():
    model = small_cnn(dropout=0.3)
    x, y = _images(2)
    for eps, steps in [(0.0, 5), (1.0, 0)]:
        out = pgd(model, x, y, norm="l2", eps=eps, steps=steps)
        assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_default_step_size_is_robustness_convention():
    assert default_step_size(3.0, 3) == pytest.approx(2.5)
    assert default_step_size(4 / 255, 20) == pytest.approx(2.5 * 4 / 255 / 20)


# -- (2) the threat model's bound -------------------------------------------------------------

@pytest.mark.parametrize("norm,eps", [("l2", 0.5), ("linf", 8 / 255)])
@pytest.mark.parametrize("random_start", [False, True])
@pytest.mark.parametrize("keep_best", [False, True])
def test_perturbation_stays_in_ball_and_image_range(norm, eps, random_start, keep_best):
    model = small_cnn(dropout=0.3).eval()
    x, y = _images(6)
    torch.manual_seed(3)
    x_adv = pgd(model, x, y, norm=norm, eps=eps, steps=5, step_size=eps,   # big steps hit the edge
                random_start=random_start, keep_best=keep_best)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert (_delta_norm(x_adv, x, norm) <= eps + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (_delta_norm(x_adv, x, norm) > 0.5 * eps).all()     # it did move


@pytest.mark.parametrize("step_cls,norm", [(L2Step, "l2"), (LinfStep, "linf")])
def test_random_init_is_inside_the_ball(step_cls, norm):
    x0 = torch.full((64, 3, 8, 8), 0.5)
    torch.manual_seed(0)
    eps = 0.2
    x = step_cls(x0, eps, 0.1).random_init(x0)
    d = _delta_norm(x, x0, norm)
    assert (d <= eps + 1e-6).all() and (d > 0).all()
    if norm == "linf":   # uniform in the box: coordinates spread over (-ε, ε), mean ~0
        delta = (x - x0).flatten()
        assert delta.min() < -0.9 * eps and delta.max() > 0.9 * eps and abs(delta.mean()) < 0.01


@pytest.mark.parametrize("step_cls,norm", [(L2Step, "l2"), (LinfStep, "linf")])
def test_projection_keeps_inside_points_and_pulls_outside_points_to_the_edge(step_cls, norm):
    x0 = torch.full((2, 3, 4, 4), 0.5)
    d = torch.randn(2, 3, 4, 4)
    d = 0.1 * d / (d.flatten(1).norm(dim=1) if norm == "l2" else d.flatten(1).abs().amax(1)
                   ).view(2, 1, 1, 1)                       # ‖d‖ = 0.1 exactly
    step = step_cls(x0, 0.2, 0.1)
    torch.testing.assert_close(step.project(x0 + d), x0 + d)          # inside: untouched
    out = step.project(x0 + 3 * d)                                   # outside: onto the edge
    torch.testing.assert_close(_delta_norm(out, x0, norm).float(), torch.full((2,), 0.2))


def test_l2_step_is_safe_for_zero_gradient():
    x0 = torch.full((2, 3, 4, 4), 0.5)
    out = L2Step(x0, 1.0, 0.5).step(x0, torch.zeros_like(x0))
    assert torch.equal(out, x0)


# -- (3) no side effects on the model -----------------------------------------------------------

@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_model_mode_grads_and_requires_grad_are_preserved(norm):
    model = small_cnn(dropout=0.3).train()
    model[5].eval()                                   # a frozen BN inside a training model
    model[0].weight.requires_grad_(False)             # a frozen parameter
    model[9].weight.grad = torch.ones_like(model[9].weight)   # a pending accumulated gradient
    before = model_state(model)
    x, y = _images(4)
    pgd(model, x, y, norm=norm, eps=0.5, steps=3, keep_best=True)
    assert_same_state(model, before)


def test_mode_restored_when_the_attack_raises():
    model = small_cnn(dropout=0.3).train()
    before = model_state(model)

    def bad_loss(logits, y):
        raise RuntimeError("boom")

    x, y = _images(2)
    with pytest.raises(RuntimeError, match="boom"):
        pgd(model, x, y, norm="l2", eps=0.5, steps=2, loss_fn=bad_loss)
    assert_same_state(model, before)


def test_bn_eval_false_uses_the_model_as_found():
    model = small_cnn(dropout=0.3).train()
    x, y = _images(4)
    stats = model[1].running_mean.clone()
    pgd(model, x, y, norm="l2", eps=0.5, steps=2, bn_eval=False)
    assert model.training and not torch.equal(model[1].running_mean, stats)


def test_runs_under_no_grad_and_rejects_inference_mode():
    model = small_cnn(dropout=0.3).eval()
    x, y = _images(2)
    with torch.no_grad():
        x_adv = pgd(model, x, y, norm="linf", eps=4 / 255, steps=2)
    assert not torch.equal(x_adv, x)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        pgd(model, x, y, norm="linf", eps=4 / 255, steps=2)


@pytest.mark.parametrize("kwargs,match", [
    (dict(norm="l3", eps=1.0, steps=2), "norm"),
    (dict(norm="l2", eps=-1.0, steps=2), "eps"),
    (dict(norm="l2", eps=1.0, steps=2.5), "steps"),
    (dict(norm="l2", eps=1.0, steps=2, step_size=0.0), "step_size"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    x, y = _images(2)
    with pytest.raises(ValueError, match=match):
        pgd(small_cnn(dropout=0.3), x, y, **kwargs)


def test_normalized_input_is_rejected():
    x, y = _images(2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pgd(small_cnn(dropout=0.3), (x - 0.5) / 0.25, y, norm="l2", eps=1.0, steps=2)


def test_scalar_loss_needs_keep_best_false():
    x, y = _images(2)
    mean_ce = lambda logits, t: F.cross_entropy(logits, t)  # noqa: E731
    with pytest.raises(ValueError, match="per-example"):
        pgd(small_cnn(dropout=0.3).eval(), x, y, norm="l2", eps=1.0, steps=2, loss_fn=mean_ce)
    out = pgd(small_cnn(dropout=0.3).eval(), x, y, norm="l2", eps=1.0, steps=2, loss_fn=mean_ce,
              keep_best=False)
    assert (_delta_norm(out, x, "l2") <= 1.0 + 1e-6).all()


# -- (4) autocast and channels_last ------------------------------------------------------------

@pytest.mark.parametrize("norm,eps", [("l2", 0.5), ("linf", 4 / 255)])
def test_bf16_autocast_and_channels_last(norm, eps):
    model = small_cnn(dropout=0.3).eval().to(memory_format=torch.channels_last)
    x, y = _images(6)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = pgd(model, x, y, norm=norm, eps=eps, steps=4)
    assert x_adv.dtype == torch.float32
    assert x_adv.is_contiguous(memory_format=torch.channels_last)
    assert (_delta_norm(x_adv, x, norm) <= eps + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        ce = lambda z: F.cross_entropy(model(z), y, reduction="none")  # noqa: E731
        assert (ce(x_adv) >= ce(x) - 1e-2).all() and (ce(x_adv) > ce(x)).any()


# -- (5) a trained model: evaluation helpers and torchattacks agreement ------------------------

@pytest.fixture(scope="module")
def digits():
    """A small CNN trained (full batch, 25 Adam steps on 800 images: ~95% test accuracy) on
    sklearn's 8×8 digits, and the 397 held-out images in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    Y = torch.tensor(d.target)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:800], perm[1400:]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten(),
                        nn.Linear(16 * 16, 10))
    opt = torch.optim.Adam(net.parameters(), 2e-2)
    for _ in range(25):
        loss = F.cross_entropy(net(X[tr]), Y[tr])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    for p in net.parameters():
        p.grad = None
    with torch.no_grad():
        assert (net(X[te]).argmax(1) == Y[te]).float().mean() > 0.9
    return net, X[te], Y[te]


def _acc(model, x, y) -> float:
    with torch.no_grad():
        return 100.0 * (model(x).argmax(1) == y).float().mean().item()


# ε chosen so that robust accuracy lands mid-range (≈40%), where disagreements would show
@pytest.mark.parametrize("norm,eps", [("l2", 0.5), ("linf", 0.1)])
def test_agrees_with_torchattacks(digits, norm, eps):
    torchattacks = pytest.importorskip(
        "torchattacks",
        reason="torchattacks not installed (pip install --no-deps torchattacks==3.5.1)")
    net, x, y = digits
    steps = 10
    alpha = default_step_size(eps, steps)
    ref_cls = torchattacks.PGDL2 if norm == "l2" else torchattacks.PGD
    ref = ref_cls(net, eps=eps, alpha=alpha, steps=steps, random_start=False)
    acc_ref = _acc(net, ref(x, y), y)
    assert 20 < acc_ref < 90, acc_ref          # the comparison is informative
    for keep_best in (False, True):
        ours = _acc(net, pgd(net, x, y, norm=norm, eps=eps, steps=steps, step_size=alpha,
                             keep_best=keep_best), y)
        assert abs(ours - acc_ref) <= 2.0, (keep_best, ours, acc_ref)


def test_robust_accuracy_helpers(digits):
    net, x, y = digits
    clean, robust, n = robust_accuracy(net, (x, y), norm="l2", eps=0.5, steps=5, batch_size=128)
    assert n == len(y) and clean == pytest.approx(_acc(net, x, y))
    per_batch = pgd(net, x, y, norm="l2", eps=0.5, steps=5)
    with torch.no_grad():
        hits = int(((net(x).argmax(1) == y) & (net(per_batch).argmax(1) == y)).sum())
    assert robust == pytest.approx(100.0 * hits / len(y))
    # more restarts can only lower robust accuracy; robust examples are a subset of clean ones
    torch.manual_seed(0)
    c1, r1 = correct_under_attack(net, x[:64], y[:64], norm="linf", eps=0.1, steps=5)
    c3, r3 = correct_under_attack(net, x[:64], y[:64], norm="linf", eps=0.1, steps=5, restarts=3)
    assert torch.equal(c1, c3) and not (r3 & ~r1).any() and not (r1 & ~c1).any()
    with pytest.raises(ValueError, match="restarts"):
        correct_under_attack(net, x, y, norm="l2", eps=0.5, steps=5, restarts=0)
