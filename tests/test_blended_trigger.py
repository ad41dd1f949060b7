"""The blended (whole-image) trigger (Chen et al. 2017): x' = (1 - alpha) x + alpha k."""

import pytest
import torch

from fedarena.config import DEFAULT_RUN, load_config
from fedarena.data.poison import blended_pattern, make_trigger
from fedarena.errors import ConfigError
from fedarena.run.simulation import Simulation


def test_blend_is_a_convex_mix_with_a_seeded_noise_image():
    t = make_trigger("blended", (1, 2, 2), value=0.25)
    k = torch.rand(1, 2, 2, generator=torch.Generator().manual_seed(0))  # the pattern: seed 0
    assert torch.equal(t.pattern, k) and torch.equal(blended_pattern(1, 2, 2, 0), k)
    x = torch.tensor([[[[0.0, 1.0], [0.5, 0.25]]]])
    # 0.75 * x + 0.25 * k, pixel by pixel
    expected = torch.stack([0.75 * x[0, 0, i, j] + 0.25 * k[0, i, j] for i in range(2) for j in range(2)]).view(
        1, 1, 2, 2
    )
    assert torch.allclose(t.apply(x), expected)
    assert t.num_pixels == 4  # the whole image


def test_defaults_alpha_0_2_and_size_picks_the_noise_seed():
    t = make_trigger("blended", (3, 4, 4))
    assert torch.all(t.mask == 0.2) and t.pattern.shape == (3, 4, 4)
    assert not torch.equal(
        make_trigger("blended", (1, 4, 4), size=1).pattern, make_trigger("blended", (1, 4, 4)).pattern
    )


@pytest.mark.parametrize(
    "kw,field",
    [
        ({"value": 0.0}, "attack.trigger_value"),
        ({"value": 1.5}, "attack.trigger_value"),
        ({"position": "center"}, "attack.trigger_position"),
        ({"blend": "add"}, "attack.trigger_blend"),
    ],
)
def test_bad_options_are_one_clear_error(kw, field):
    with pytest.raises(ConfigError, match=field):
        make_trigger("blended", (1, 8, 8), **kw)


@pytest.mark.usefixtures("one_thread")
def test_blended_backdoor_is_learned_under_fedavg():
    # alpha = 0.5 on the 8x8 digits (measured: BA 0.97 after 12 rounds; alpha = 0.3 fades to 0.19)
    r = Simulation(
        load_config(None, ["attack.trigger=blended", "attack.trigger_value=0.5", "fl.rounds=12"], base=DEFAULT_RUN)
    ).run()
    assert r.summary["final_backdoor_acc"] >= 0.5 and r.summary["final_main_acc"] >= 0.85
