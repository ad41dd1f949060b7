import os
from pathlib import Path

# OpenMP threads that spin while waiting make small tensor ops crawl on a busy 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def find_shared_data() -> Path | None:
    """The offline data folder: ``$FEDARENA_DATA`` when it holds fashion-mnist/, else
    ``../shared/data`` relative to the repository root; None when neither does."""
    env = os.environ.get("FEDARENA_DATA")
    for folder in ([Path(env).expanduser()] if env else []) + [SHARED_DATA]:
        if (folder / "fashion-mnist" / "train-images-idx3-ubyte.gz").exists():
            return folder
    return None


@pytest.fixture
def shared_data() -> Path:
    """The offline data (:func:`find_shared_data`; developer machines and CI); tests using it skip elsewhere."""
    folder = find_shared_data()
    if folder is None:
        pytest.skip("no offline data: set FEDARENA_DATA or provide ../shared/data")
    return folder


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: small models train faster and do not fight other jobs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def interrupt_at(monkeypatch):
    """``interrupt_at(t)``: the next runs stop with Ctrl-C (KeyboardInterrupt) as round ``t``
    begins; ``interrupt_at(None)`` lets them play again."""
    from fedarena.run.simulation import Simulation

    real = Simulation.plan_round

    def arm(t):
        def plan_round(self, r):
            if t is not None and r == t:
                raise KeyboardInterrupt
            return real(self, r)

        monkeypatch.setattr(Simulation, "plan_round", plan_round if t is not None else real)

    return arm


@pytest.fixture
def kill_slow_cli():
    """``kill(args, watched, lines)``: start ``tests/slow_cli.py ARGS`` (the CLI with every
    round slowed), wait until the file ``watched`` holds ``lines`` lines (at most 120 s),
    then kill it with SIGKILL, as a crash would."""
    import signal
    import subprocess
    import sys
    import time

    slow_cli = str(Path(__file__).resolve().parent / "slow_cli.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}

    def kill(args: list[str], watched: Path, lines: int) -> None:
        proc = subprocess.Popen(
            [sys.executable, slow_cli, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if watched.exists() and len(watched.read_text().splitlines()) >= lines:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    return kill
