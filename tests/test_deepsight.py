"""DeepSight (Rieger et al., NDSS 2022): NEUPs, threshold exceedings, labels, DDifs and
the ensemble distance by hand; end to end it stops a plain backdoor that FedAvg accepts."""

import math

import numpy as np
import pytest
import torch

from fedarena.config import DEFAULT_RUN, load_config
from fedarena.core.layout import ParamLayout
from fedarena.defenses.base import RoundContext
from fedarena.defenses.deepsight import (
    DeepSight,
    ddifs,
    last_layer_weight_bias,
    merge_clusterings,
    neups,
    suspicious_labels,
    threshold_exceedings,
)
from fedarena.defenses.probe import ModelProbe
from fedarena.errors import ConfigError
from fedarena.run.simulation import Simulation

pytestmark = pytest.mark.usefixtures("one_thread")


def test_neups_are_squared_energies_normalised():
    # neuron 0: |1| + |-1| + |b=1| = 3, neuron 1: |0| + |2| + |b=-1| = 3, neuron 2: 0 + 0 + |b=2| = 2
    W = torch.tensor([[[1.0, -1.0], [0.0, 2.0], [0.0, 0.0]]], dtype=torch.float64)
    b = torch.tensor([[1.0, -1.0, 2.0]], dtype=torch.float64)
    # squares 9, 9, 4 -> / 22
    assert torch.allclose(neups(W, b), torch.tensor([[9 / 22, 9 / 22, 4 / 22]], dtype=torch.float64))


def test_threshold_exceedings_count_neups_above_max_times_max_001_1_over_p():
    # P = 4: xi = max(0.01, 0.25) * 0.5 = 0.125 -> 0.5, 0.3, 0.2 exceed, 0.0 does not -> 3
    # second row: xi = 0.25 * 0.97 = 0.2425 -> only 0.97 -> 1
    c = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.97, 0.01, 0.01, 0.01]])
    assert threshold_exceedings(c).tolist() == [3, 1]
    # P = 200: 1 / P = 0.005 < 0.01 -> xi = 0.01 * max
    c = torch.full((1, 200), 0.001)
    c[0, 0] = 0.5
    c[0, 1] = 0.006  # > 0.005 = 0.01 * 0.5
    c[0, 2] = 0.004
    assert threshold_exceedings(c).tolist() == [2]


def test_labels_are_te_at_most_half_the_median():
    # median(8, 9, 2, 8, 4) = 8 -> boundary 4: TE 2 and 4 suspicious
    assert suspicious_labels(torch.tensor([8, 9, 2, 8, 4])).tolist() == [False, False, True, False, True]
    # even count: median(2, 6, 6, 10) = 6 -> boundary 3
    assert suspicious_labels(torch.tensor([2, 6, 6, 10])).tolist() == [True, False, False, False]


def test_last_layer_slices_of_u():
    layout = ParamLayout.from_params(
        {"a.weight": torch.zeros(3), "out.weight": torch.zeros(2, 2), "out.bias": torch.zeros(2)}
    )
    U = torch.arange(18.0).view(2, 9)  # columns: a.weight 0-2, out.weight 3-6, out.bias 7-8
    W, b = last_layer_weight_bias(U, layout)
    assert W.tolist() == [[[3.0, 4.0], [5.0, 6.0]], [[12.0, 13.0], [14.0, 15.0]]]
    assert b.tolist() == [[7.0, 8.0], [16.0, 17.0]]


def test_ddifs_on_a_linear_model():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False))
    layout = ParamLayout.from_module(model)
    probe = ModelProbe(model, {}, layout, (2,), 2)
    g = torch.zeros(4)  # the global model outputs 0, 0: p_G = (0.5, 0.5) everywhere
    U = torch.tensor([[math.log(3.0), 0.0, 0.0, 0.0]])  # W_i = [[ln 3, 0], [0, 0]]
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # x1: logits (ln 3, 0) -> p = (0.75, 0.25); x2: (0, 0) -> (0.5, 0.5)
    # DDif = mean(p / 0.5) = ((1.5 + 1) / 2, (0.5 + 1) / 2) = (1.25, 0.75)
    assert torch.allclose(ddifs(probe, g, U, x), torch.tensor([[1.25, 0.75]], dtype=torch.float64))


def test_merged_distance_is_one_minus_share_of_clusterings_agreeing():
    D = merge_clusterings([np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]), np.array([5, 5, 5, 5])])
    # (0, 1): together 3 of 3 -> 0; (0, 2): 2 of 3 -> 1/3; (2, 3): 2 of 3 -> 1/3; (0, 3): 1 of 3 -> 2/3
    assert D[0, 1] == 0 and np.isclose(D[0, 2], 1 / 3) and np.isclose(D[2, 3], 1 / 3) and np.isclose(D[0, 3], 2 / 3)


def test_bad_parameters_and_a_missing_probe():
    with pytest.raises(ConfigError, match="defense.tau"):
        DeepSight(tau=0.0)
    with pytest.raises(ConfigError, match="defense.noise_samples"):
        DeepSight(noise_samples=0)
    layout = ParamLayout.from_params({"w": torch.zeros(2, 2)})
    ctx = RoundContext(0, layout, torch.arange(3), torch.ones(3), global_params=torch.zeros(4))
    with pytest.raises(ConfigError, match="probe"):
        DeepSight()(torch.zeros(3, 4), ctx)


def _detect(defense):
    r = Simulation(load_config(None, [f"defense.name={defense}", "fl.rounds=12"], base=DEFAULT_RUN)).run()
    rows = [c for c in r.clients if c["attacking"]]
    caught = sum(not c.get("accepted", True) for c in rows) / len(rows)
    false = [c for c in r.clients if not c["attacking"]]
    fpr = sum(not c.get("accepted", True) for c in false) / len(false)
    return r.summary["final_backdoor_acc"], caught, fpr


def test_deepsight_stops_a_plain_backdoor_that_fedavg_accepts():
    ba_fedavg, _, _ = _detect("fedavg")
    ba, recall, fpr = _detect("deepsight")
    # measured: FedAvg BA 0.65; DeepSight rejects every attacking row (recall 1.0), FPR 0.01, BA 0.0
    assert ba_fedavg >= 0.5
    assert ba <= 0.1 and recall >= 0.9 and fpr <= 0.1
