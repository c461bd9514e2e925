"""The server under torch.distributed (DDP): launched by torchrun, rank 0 serves.

- :mod:`~corteza.server.distributed.launch`: ``corteza serve --nproc-per-node N``
  builds torchrun's arguments and runs torch's own launcher.
- :mod:`~corteza.server.distributed.group`: a rank joins the groups (NCCL or
  gloo for data, gloo for control) and watches its parent.
- :mod:`~corteza.server.distributed.control`: rank 0's headers, the heartbeat,
  sharing the state.
- :mod:`~corteza.server.distributed.shard`: one rank's slice of a step under DDP.
- :mod:`~corteza.server.distributed.follower`: the loop of the ranks but 0.
"""
