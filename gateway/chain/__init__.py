"""The scoring chain: the layers that turn a request's documents into scores (see `order`)."""
