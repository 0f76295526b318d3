"""The scaffold-rewrite subgraph: propose -> validate -> (retry | accept | give up)."""

from langgraph.graph import END, START, StateGraph

from sia.graph.context import RunContext
from sia.graph.state import ScaffoldRewriteState, SubgraphOutput
from sia.nodes.progress import timed
from sia.nodes.routing import after_propose, after_validate
from sia.nodes.scaffold_rewrite import accept_scaffold, give_up_scaffold, propose_scaffold, validate_scaffold

builder = StateGraph(ScaffoldRewriteState, context_schema=RunContext, output_schema=SubgraphOutput)
builder.add_node("propose_scaffold", timed(propose_scaffold))
builder.add_node("validate_scaffold", timed(validate_scaffold))
builder.add_node("accept_scaffold", timed(accept_scaffold))
builder.add_node("give_up_scaffold", timed(give_up_scaffold))
builder.add_edge(START, "propose_scaffold")
builder.add_conditional_edges("propose_scaffold", after_propose)
builder.add_conditional_edges("validate_scaffold", after_validate)
builder.add_edge("accept_scaffold", END)
builder.add_edge("give_up_scaffold", END)

scaffold_rewrite_graph = builder.compile(name="scaffold_rewrite")
