"""The SIA loop as LangGraph graphs: typed state, run configuration and wiring only."""
