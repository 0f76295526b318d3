"""The fine-tuning subgraph: build_dataset -> train_adapter; either step may stop it early."""

from langgraph.graph import END, START, StateGraph

from sia.graph.context import RunContext
from sia.graph.state import FinetuneState, SubgraphOutput
from sia.nodes.finetune import build_dataset, train_adapter
from sia.nodes.progress import timed
from sia.nodes.routing import after_build_dataset

builder = StateGraph(FinetuneState, context_schema=RunContext, output_schema=SubgraphOutput)
builder.add_node("build_dataset", timed(build_dataset))
builder.add_node("train_adapter", timed(train_adapter))
builder.add_edge(START, "build_dataset")
builder.add_conditional_edges("build_dataset", after_build_dataset, {"continue": "train_adapter", "stop": END})
builder.add_edge("train_adapter", END)

finetune_graph = builder.compile(name="finetune")
