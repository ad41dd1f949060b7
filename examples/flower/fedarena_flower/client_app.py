"""ClientApp: partition `partition-id` is fedarena's client of that id (malicious ones attack)."""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from .task import task_for

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    return task_for(context.run_config).train(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return task_for(context.run_config).evaluate_local(msg, context)
