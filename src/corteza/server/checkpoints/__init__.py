"""Checkpoints: the on-disk store, validation of loaded state, the checkpointer."""
