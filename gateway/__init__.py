"""The target-model side: the embedded model store and the local OpenAI-compatible gateway."""
