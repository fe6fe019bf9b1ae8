"""What one gateway builds from its config and keeps while it serves: the model catalog,
per-deployment routing state, cost governance and the score store."""
