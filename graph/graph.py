"""The SIA loop: meta -> task -> feedback -> (scaffold_rewrite | finetune) -> (task | record_failure)
-> feedback ... -> finish.

`graph` (compiled without a checkpointer) is what langgraph.json exports for Studio;
`build_graph(checkpointer)` is what the CLI and scripts run, with SQLite checkpoints. Each node
is `timed` (nodes/progress.py): it announces itself in now.json and logs its wall time."""

from langgraph.graph import END, START, StateGraph
from langgraph.types import RetryPolicy

from sia.graph.context import RunContext
from sia.graph.finetune import finetune_graph
from sia.graph.scaffold_rewrite import scaffold_rewrite_graph
from sia.graph.state import SIAInput, SIAState
from sia.nodes.feedback import feedback
from sia.nodes.finish import finish
from sia.nodes.meta import meta
from sia.nodes.record_failure import record_failure
from sia.nodes.progress import timed
from sia.nodes.routing import after_feedback, after_lever
from sia.nodes.task import task

# Transient failures (a gateway or endpoint hiccup) are retried; bad input is not.
transient = RetryPolicy(max_attempts=2, retry_on=(ConnectionError, TimeoutError))

builder = StateGraph(SIAState, context_schema=RunContext, input_schema=SIAInput)
builder.add_node("meta", timed(meta), retry_policy=transient)
builder.add_node("task", timed(task), retry_policy=transient)
builder.add_node("feedback", timed(feedback), retry_policy=transient)
builder.add_node("scaffold_rewrite", scaffold_rewrite_graph)
builder.add_node("finetune", finetune_graph)
builder.add_node("record_failure", timed(record_failure))
builder.add_node("finish", timed(finish))
builder.add_edge(START, "meta")
builder.add_edge("meta", "task")
builder.add_edge("task", "feedback")
builder.add_conditional_edges("feedback", after_feedback)
builder.add_conditional_edges("scaffold_rewrite", after_lever)
builder.add_conditional_edges("finetune", after_lever)
builder.add_edge("record_failure", "feedback")
builder.add_edge("finish", END)


def build_graph(checkpointer=None):
    return builder.compile(checkpointer=checkpointer, name="sia")


graph = build_graph()
