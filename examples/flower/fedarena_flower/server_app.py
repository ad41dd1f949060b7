"""ServerApp: the fedarena defense of the run config aggregates; the server evaluates
main and backdoor accuracy on the held-out test set after every round."""

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from .task import task_for

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    task = task_for(context.run_config)
    cfg = task.cfg
    strategy = task.strategy()
    print(
        f"fedarena: defense {strategy.defense}, attack {cfg.attack.name!r} on partitions "
        f"{task.malicious_partitions} of {cfg.fl.num_clients}"
    )
    result = strategy.start(
        grid=grid, initial_arrays=task.initial_arrays(), num_rounds=cfg.fl.rounds, evaluate_fn=task.evaluate
    )
    for rnd, m in sorted(result.evaluate_metrics_serverapp.items()):
        ba = m.get("backdoor_acc")
        print(f"round {rnd}: main_acc {m['main_acc']:.3f}" + ("" if ba is None else f"  backdoor_acc {ba:.3f}"))
    last = result.train_metrics_clientapp.get(cfg.fl.rounds)
    if last is not None:
        print(
            "last round, per client (partition: accepted):",
            dict(zip(last["client-partition-id"], last["client-accepted"])),
        )
