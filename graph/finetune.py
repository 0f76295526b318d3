"""The fine-tuning subgraph: build_dataset -> train_adapter -> score_adapter -> promote_adapter."""

from langgraph.graph import END, START, StateGraph

from sia.graph.context import RunContext
from sia.graph.state import FinetuneState, SubgraphOutput
from sia.nodes.finetune import build_dataset, promote_adapter, score_adapter, train_adapter
from sia.nodes.routing import after_finetune_step

builder = StateGraph(FinetuneState, context_schema=RunContext, output_schema=SubgraphOutput)
builder.add_node("build_dataset", build_dataset)
builder.add_node("train_adapter", train_adapter)
builder.add_node("score_adapter", score_adapter)
builder.add_node("promote_adapter", promote_adapter)
builder.add_edge(START, "build_dataset")
builder.add_conditional_edges("build_dataset", after_finetune_step, {"continue": "train_adapter", "stop": END})
builder.add_conditional_edges("train_adapter", after_finetune_step, {"continue": "score_adapter", "stop": END})
builder.add_edge("score_adapter", "promote_adapter")
builder.add_edge("promote_adapter", END)

finetune_graph = builder.compile(name="finetune")
