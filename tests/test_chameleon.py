"""Chameleon (Dai & Li, ICML 2023): the supervised contrastive loss by hand, the poisoned
pairs' weight, the stamped-sample record and a backdoor planted by the two-stage training."""

import math

import pytest
import torch

from fedarena.attacks.base import DataInfo
from fedarena.attacks.chameleon import Chameleon, supcon_loss
from fedarena.config import DEFAULT_RUN, load_config
from fedarena.errors import ConfigError
from fedarena.run.simulation import Simulation


def test_supcon_by_hand():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 0, 1])
    # T = 1; anchor 0: others z.z = 0 (1), 1 (2), 0 (3); denominator e^0 + e^1 + e^0 = e + 2
    #   positives 1, 2: -(log(1 / (e + 2)) + log(e / (e + 2))) / 2
    # anchor 1: sims 0 (0), 0 (2), 1 (3): positives 0, 2: -(2 log(1 / (e + 2))) / 2
    # anchor 2: like anchor 0; anchor 3: no positive (not counted)
    e = math.e
    a0 = -(math.log(1 / (e + 2)) + math.log(e / (e + 2))) / 2
    a1 = -math.log(1 / (e + 2))
    assert math.isclose(float(supcon_loss(z, y, 1.0)), (a0 + a1 + a0) / 3, rel_tol=1e-6)


def test_pair_weights_scale_the_positive_terms():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    plain = float(supcon_loss(z, y, 1.0))  # -log(e / (e + 1)) for anchors 0 and 1
    assert math.isclose(plain, -math.log(math.e / (math.e + 1)), rel_tol=1e-6)
    assert math.isclose(float(supcon_loss(z, y, 1.0, torch.full((3, 3), 2.0))), 2 * plain, rel_tol=1e-6)


def test_poison_records_the_stamped_samples():
    a = Chameleon(target=7, source=5, trigger="plus", poison_frac=0.5)
    a.setup(DataInfo(10, (1, 28, 28)), torch.Generator())
    x, y = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(40) % 10
    px, py = a.poison(x, y, 3, torch.Generator().manual_seed(1))
    assert torch.equal(a.stamped[3], py != y) and int(a.stamped[3].sum()) == 2  # floor(0.5 * 4 fives)


def test_bad_parameters_are_one_clear_error():
    with pytest.raises(ConfigError, match="attack.temperature"):
        Chameleon(temperature=0.0)
    with pytest.raises(ConfigError, match="attack.contrastive_epochs"):
        Chameleon(contrastive_epochs=0, head_epochs=0)


@pytest.mark.usefixtures("one_thread")
def test_two_stage_training_plants_the_backdoor():
    # measured: BA 0.95 after round 0, 0.99 after round 1 (digits, 4 of 20 attackers, FedAvg); the main accuracy
    # after two rounds (0.18) is the plain backdoor's (0.22): the digits model is still early in training
    r = Simulation(
        load_config(
            None,
            [
                "attack.name=chameleon",
                "fl.rounds=2",
                "attack.poison_frac=1.0",
                "attack.head_epochs=3",
                "attack.temperature=0.2",
                "attack.poison_pull=2",
            ],
            base=DEFAULT_RUN,
        )
    ).run()
    plain = Simulation(load_config(None, ["fl.rounds=2", "attack.poison_frac=1.0"], base=DEFAULT_RUN)).run()
    assert r.summary["final_backdoor_acc"] >= 0.8
    assert r.summary["final_main_acc"] >= plain.summary["final_main_acc"] - 0.1


@pytest.mark.usefixtures("one_thread")
def test_each_stage_trains_its_own_parameters_on_the_core_trainer():
    # stage 1 (contrastive) moves only the encoder, stage 2 (head) only the last layer: a stage's frozen
    # parameters get exactly 0; the head stage alone is core's trainer with the head trainable and CE
    from fedarena.core.local import BatchSchedule, train_sequential

    def update(**params):
        sim = Simulation(
            load_config(
                None,
                ["attack.name=chameleon", "fl.rounds=1", "fl.momentum=0.9", "fl.weight_decay=0.01"]
                + [f"attack.{k}={v}" for k, v in params.items()],
                base=DEFAULT_RUN,
            )
        )
        ctx = sim.local_context(0, [int(sim.malicious[0])])
        before = {n: p.clone() for n, p in ctx.global_params.items()}
        row = sim.attack.local_train(ctx)[0]
        assert all(torch.equal(before[n], p) for n, p in ctx.global_params.items())  # the global model is untouched
        return sim, row

    sim, enc_only = update(contrastive_epochs=2, head_epochs=0)
    head = sim.layout.columns(sim.layout.last_layer())
    enc = torch.ones(sim.layout.dim, dtype=torch.bool)
    enc[head] = False
    assert torch.count_nonzero(enc_only[head]) == 0 and torch.count_nonzero(enc_only[enc]) > 0
    sim, head_only = update(contrastive_epochs=0, head_epochs=2)
    assert torch.count_nonzero(head_only[enc]) == 0 and torch.count_nonzero(head_only[head]) > 0
    ctx = sim.local_context(0, [int(sim.malicious[0])])
    idx = [ctx.poisoned_index[0]]
    recipe = ctx.recipe.with_(epochs=2, trainable=sim.layout.last_layer())
    ref, _ = train_sequential(
        ctx.model,
        ctx.global_params,
        ctx.x,
        ctx.y,
        idx,
        BatchSchedule.build([len(idx[0])], recipe, ctx.rngs),
        recipe,
        prepare=ctx.prepare,
        buffers=ctx.buffers,
    )
    assert torch.equal(head_only, ref[0])


@pytest.mark.usefixtures("one_thread")
def test_matches_a_torch_optim_reference_of_the_two_stages():
    # the reference: the attack's former loop (a model copy, torch.optim.SGD per stage over that stage's
    # parameters, a forward pre-hook for the last layer's input); measured bit-identical on CPU
    import copy

    import numpy as np
    import torch.nn.functional as F

    sim = Simulation(
        load_config(
            None,
            [
                "attack.name=chameleon",
                "fl.rounds=1",
                "fl.momentum=0.9",
                "fl.weight_decay=0.01",
                "attack.poison_pull=2",
                "attack.temperature=0.2",
            ],
            base=DEFAULT_RUN,
        )
    )
    a, ids = sim.attack, [int(c) for c in sim.malicious[:2]]
    got = a.local_train(sim.local_context(0, ids))
    ctx, r = sim.local_context(0, ids), sim.local_context(0, ids).recipe
    head = ctx.layout.last_layer()
    for i, cid in enumerate(ids):
        net = copy.deepcopy(ctx.model)
        net.load_state_dict({**ctx.global_params, **ctx.buffers}, strict=False)
        net.train()
        idx, stamped = np.asarray(ctx.poisoned_index[i]), a.stamped[cid]
        feats = []
        net.get_submodule(head[0].rsplit(".", 1)[0]).register_forward_pre_hook(lambda m, inp: feats.append(inp[0]))
        for stage, epochs in (("contrastive", a.contrastive_epochs), ("head", a.head_epochs)):
            ps = [p for n, p in net.named_parameters() if (n in head) == (stage == "head")]
            opt = torch.optim.SGD(ps, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
            for _ in range(epochs):
                perm = ctx.rngs[i].permutation(len(idx))
                for s in range(0, len(idx), r.batch_size):
                    b = perm[s : s + r.batch_size]
                    xb, yb = ctx.prepare(ctx.x[idx[b]]), ctx.y[idx[b]]
                    logits = net(xb)
                    if stage == "head":
                        loss = F.cross_entropy(logits, yb)
                    else:
                        sb = stamped[torch.from_numpy(b)]
                        w = 1.0 + (a.poison_pull - 1.0) * (sb.unsqueeze(0) | sb.unsqueeze(1)).float()
                        loss = supcon_loss(F.normalize(feats[-1].flatten(1), dim=1), yb, a.temperature, w)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        ref = torch.cat([p.detach().reshape(-1) for p in net.parameters()]) - ctx.layout.flatten(ctx.global_params)
        assert torch.allclose(got[i], ref, atol=1e-6), float((got[i] - ref).abs().max())
