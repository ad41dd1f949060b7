"""``python tests/slow_cli.py ARGS``: the fedarena CLI with every round slowed by 0.1 s,
so tests can kill a run or a sweep (kill -9) in the middle. Not a test module."""

import sys
import time

from fedarena.cli import main
from fedarena.run.simulation import Simulation

_real = Simulation.plan_round


def _slow(self, t):
    time.sleep(0.1)
    return _real(self, t)


Simulation.plan_round = _slow
sys.argv = ["fedarena"] + sys.argv[1:]
main()
