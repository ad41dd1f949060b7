"""Component state with back-references: a cycle is named, never a RecursionError."""

import pytest
import torch

from fedarena.core.state import StateCycleError, Stateful, decode, encode
from fedarena.defenses.dp import DifferentialPrivacy


class _Node(Stateful):
    def __init__(self):
        self.value = torch.tensor([1.0])
        self.child = None


def test_cycle_is_named_with_its_path():
    a, b = _Node(), _Node()
    a.child, b.child = b, a
    with pytest.raises(StateCycleError, match=r"_Node\.child\.child"):
        a.state_dict()


def test_list_that_contains_itself_is_a_cycle():
    xs: list = [1.0]
    xs.append(xs)
    with pytest.raises(StateCycleError):
        encode(xs)


def test_shared_but_acyclic_values_are_fine():
    shared = torch.tensor([2.0])
    a = _Node()
    a.child = [shared, shared]  # the same tensor twice is no cycle
    assert torch.equal(decode(a.state_dict()["child"])[1], shared)


@pytest.mark.parametrize("mode", ["local", "central"])
def test_dp_stage_state_round_trips(mode):
    dp = DifferentialPrivacy(dp=mode)
    dp.post.rounds = 7
    state = dp.state_dict()
    assert "owner" not in state["post"]["__stateful__"]
    fresh = DifferentialPrivacy(dp=mode)
    fresh.load_state_dict(state)
    assert fresh.post.rounds == 7 and fresh.post.owner is fresh
