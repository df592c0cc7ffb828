"""``--compile``: the attack under ``torch.compile`` computes the input gradient only, and a
compiled PGD training run follows the eager one (same losses within float rounding)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robust_zoo.attacks import pgd
from robust_zoo.engine.loop import Trainer
from robust_zoo.engine.precision import compile_model
from robust_zoo.recipe import AttackSettings
from zoo import mini_model, small_cnn


@pytest.fixture(scope="module")
def inductor():
    """Inductor builds CPU kernels with a C++ compiler; where there is none, compile_model's
    probe says so, and the tests that run Inductor's kernels are skipped with that message."""
    from robust_zoo.errors import UsageError

    try:
        compile_model(nn.Identity(), torch.device("cpu"))
    except UsageError as e:
        pytest.skip(str(e))


class BackwardRecorder:
    """A ``torch.compile`` backend (AOTAutograd, graphs run as traced) that records, for every
    compiled backward graph, how many gradients it returns and their shapes."""

    def __init__(self):
        from functorch.compile import make_boxed_func
        from torch._dynamo.backends.common import aot_autograd

        self.backwards: list[list[tuple[int, ...]]] = []

        def forward(gm, _):
            return make_boxed_func(gm.forward)

        def backward(gm, _):
            (out,) = [n for n in gm.graph.nodes if n.op == "output"]
            self.backwards.append([tuple(a.meta["val"].shape) for a in out.args[0]
                                   if a is not None])
            return make_boxed_func(gm.forward)

        self.backend = aot_autograd(fw_compiler=forward, bw_compiler=backward)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_compiled_attack_backward_computes_the_input_gradient_only(norm):
    model = mini_model()
    rec = BackwardRecorder()
    compiled = torch.compile(model, backend=rec.backend)
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    model.model.fc.weight.requires_grad_(False)            # a frozen parameter stays frozen
    flags = [p.requires_grad for p in model.parameters()]
    model.train()

    adv = pgd(compiled, x, y, norm=norm, eps=0.5 if norm == "l2" else 8 / 255, steps=3,
              random_start=True)

    assert rec.backwards, "the attack ran no compiled backward"
    assert all(shapes == [tuple(x.shape)] for shapes in rec.backwards), rec.backwards
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters()) and model.training
    assert adv.shape == x.shape
    # the compiled attack is the eager attack
    eager = pgd(model, x, y, norm=norm, eps=0.5 if norm == "l2" else 8 / 255, steps=3)
    again = pgd(compiled, x, y, norm=norm, eps=0.5 if norm == "l2" else 8 / 255, steps=3)
    torch.testing.assert_close(again, eager, atol=1e-5, rtol=0)


def test_training_under_compile_still_computes_parameter_gradients():
    """After the attack the training forward's backward returns every parameter's gradient."""
    model = mini_model()
    rec = BackwardRecorder()
    compiled = torch.compile(model, backend=rec.backend)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    attack = AttackSettings(norm="l2", eps=0.5, attack_steps=2, keep_best=False)
    trainer = Trainer(model, opt, device=torch.device("cpu"), attack=attack,
                      train_model=compiled)
    model.train()
    trainer.train_step(torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0]))
    # one backward graph for the attack (the input's gradient), one for the update (every
    # parameter's, and not the detached adversarial input's)
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert rec.backwards == [[(4, 3, 16, 16)], shapes], [len(b) for b in rec.backwards]
    assert all(p.grad is not None for p in model.parameters())


def _pgd_training_losses(compiled: bool, steps: int = 4) -> list[float]:
    model = small_cnn(3, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    attack = AttackSettings(norm="l2", eps=0.5, attack_steps=3, keep_best=False)
    run = compile_model(model, torch.device("cpu")) if compiled else model
    trainer = Trainer(model, opt, device=torch.device("cpu"), attack=attack, train_model=run)
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(8, 3, 16, 16, generator=g), torch.randint(0, 3, (8,), generator=g))
            for _ in range(steps)]
    model.train()
    return [float(trainer.train_step(x, y)[0]) for x, y in data]


def test_compiled_pgd_training_matches_eager_losses(inductor):
    """Inductor-compiled PGD-3 training steps give the eager run's losses (float rounding only:
    Inductor fuses and reorders, so bit identity is not expected)."""
    eager = _pgd_training_losses(compiled=False)
    compiled = _pgd_training_losses(compiled=True)
    assert eager[0] != eager[-1]                       # the run trains
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), rtol=1e-4, atol=1e-5)


def test_evaluate_compiled_counts_match_eager(inductor):
    from robust_zoo.evaluate import evaluate, format_report

    model = small_cnn(3, seed=2)
    g = torch.Generator().manual_seed(3)
    data = (torch.rand(8, 3, 16, 16, generator=g), torch.randint(0, 3, (8,), generator=g))
    res = {c: evaluate(model, data, norm="linf", eps=2 / 255, steps=2, autoattack=False,
                       batch_size=8, device="cpu", compile=c, progress=False)
           for c in (False, True)}
    assert res[True]["counts"] == res[False]["counts"]
    assert res[True]["compiled"] and not res[False]["compiled"]
    assert "torch.compile" in format_report(res[True])
    assert all(p.requires_grad for p in model.parameters()) and model.training


def test_evaluate_cli_refuses_an_unknown_precision(capsys):
    from robust_zoo.evaluate import main

    assert main(["resnet50_l2_eps3", "--data", ".", "--precision", "fp16"]) == 2
    assert "fp32" in capsys.readouterr().err


def test_transfer_full_fine_tuning_under_compile_matches_eager(inductor):
    from robust_zoo.transfer.finetune import train_network
    from robust_zoo.transfer.hparams import TransferConfig

    g = torch.Generator().manual_seed(4)
    ds = torch.utils.data.TensorDataset(torch.rand(16, 3, 16, 16, generator=g),
                                        torch.randint(0, 3, (16,), generator=g))
    losses = {}
    for c in (False, True):
        cfg = TransferConfig(mode="full", lr=0.05, epochs=2, lr_step=1, batch_size=8,
                             compile=c, augment=False)
        model = small_cnn(3, seed=5)
        info = train_network(model, ds, cfg, progress=False, log=lambda *_: None)
        losses[c] = [h["train_loss"] for h in info["history"]]
        assert all(p.requires_grad for p in model.parameters())
    torch.testing.assert_close(torch.tensor(losses[True]), torch.tensor(losses[False]),
                               rtol=1e-4, atol=1e-5)
