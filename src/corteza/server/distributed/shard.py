"""One rank's part of a training step under DistributedDataParallel.

Every rank holds the whole global batch (rank 0 broadcast it) and trains its
contiguous slice (:meth:`DistributedGroup.bounds`). The loss each rank
backpropagates is its slice's share of the *whole batch's* loss, term by term:
the anomaly BCE weighs ``n_r / B`` and a regression head weighs the rows with a
target in the slice over those in the batch; times the world size, since DDP
averages the gradients. The all-reduced gradient is then the one-process
gradient of the whole batch, for uneven slices too. A rank whose slice is empty
(a batch smaller than the world) runs a forward on one sample weighted zero,
so that it still joins every collective.

Decisions every rank must take alike are taken on global values: the loss a
step reports (and checks for NaN) is the whole batch's, all-reduced before the
backward; the gradient norm (clipping, the fp32 non-finite skip, fp16's loss
scaler) is read from the all-reduced gradients, the same on every rank.

Running out of device memory is such a decision too. The forward pass (where a
batch's activations are allocated) runs under a guard, and the all-reduce of
the loss carries a flag beside it: when any rank ran out of memory there, every
rank raises :class:`GroupOutOfMemoryError` before the backward, nothing is
applied anywhere, and rank 0 answers as one process does (``out_of_memory``).
An out-of-memory error later in the step (the backward, whose gradient
all-reduces are already under way on the other ranks) cannot be agreed on: it
ends the group, and torchrun restarts it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from numpy.typing import NDArray
from torch.nn.parallel import DistributedDataParallel

from corteza.model import CortezaCognitiva, CortezaOutput, LossTerms, LossWeights
from corteza.model import anomaly_probability as probability_of
from corteza.server.distributed.control import Leader, Op, broadcast_tensors, share_state
from corteza.server.distributed.group import DistributedGroup
from corteza.server.engine.precision import MixedPrecision

Tensors = list[torch.Tensor | None]  # inputs, labels, dendrite target, coherence target
LossFn = Callable[
    [CortezaOutput, torch.Tensor, torch.Tensor | None, torch.Tensor | None], LossTerms
]
Summary = tuple[
    NDArray[np.float32],
    list[float],
    list[float],
    tuple[float, float, float],
    dict[str, float | None],
]


class GroupOutOfMemoryError(torch.cuda.OutOfMemoryError):
    """Some rank ran out of device memory in a step's forward pass; every rank raises it
    alike, before the backward: nothing of that step was applied on any rank."""


def _target_rows(target: torch.Tensor | None, start: int, end: int) -> tuple[int, int]:
    """Rows carrying a target (no NaN) in ``[start, end)`` and in the whole batch."""
    if target is None:
        return 0, 0
    rows = ~torch.isnan(target).any(dim=-1)
    return int(rows[start:end].sum()), int(rows.sum())


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every weight's bytes, in order: equal on every rank after every step."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class _Heads(torch.nn.Module):
    """The model, with the output of a head no sample of the global batch trains detached.

    Feedback steps go through it too (``feedback=True``): every backward through
    the model's parameters must go through the DDP wrap, or its bookkeeping of
    used parameters goes wrong at the next step.

    DDP looks for unused parameters from the forward's outputs: a head that no loss
    term reaches on any rank is then unused, its gradient stays None on every rank,
    as in one process (AdamW leaves it alone).
    """

    def __init__(self, model: CortezaCognitiva) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, x: torch.Tensor, dendrites: bool, coherence: bool, feedback: bool = False
    ) -> CortezaOutput | torch.Tensor:
        if feedback:  # the dendrite head on frozen features (eval mode, no gradient)
            self.model.eval()
            try:
                with torch.no_grad():
                    features = self.model.features(x)
            finally:
                self.model.train()
            return torch.tanh(self.model.capa5.dendrites(features))
        out: CortezaOutput = self.model(x)
        return out._replace(
            dendrites=out.dendrites if dendrites else out.dendrites.detach(),
            coherence=out.coherence if coherence else out.coherence.detach(),
        )


class Shard:
    """The DDP-wrapped model and the arithmetic of one rank's slice."""

    def __init__(
        self, group: DistributedGroup, model: CortezaCognitiva, weights: LossWeights
    ) -> None:
        self.group = group
        self.weights = weights
        self.leader = Leader(group) if group.leader else None
        device_ids = [group.device.index] if group.device.type == "cuda" else None
        # find_unused_parameters: a head without targets gets no gradient on any rank,
        # exactly as in one process (its AdamW state is not touched).
        self.model = model
        self.ddp = DistributedDataParallel(
            _Heads(model), device_ids=device_ids, find_unused_parameters=True
        )
        self._slice = (0, 0, 0)  # size, start, end of the last forward
        self._rows = (0, 0, 0, 0)  # dendrite local/total, coherence local/total

    # -- rank 0 -----------------------------------------------------------------------

    @contextlib.contextmanager
    def leading(
        self,
        op: Op,
        fields: Sequence[int],
        tensors: Sequence[torch.Tensor | None],
        expected: tuple[type[BaseException], ...] = (),
    ) -> Iterator[None]:
        """Rank 0: the header, the tensors, then the body, as one operation."""
        assert self.leader is not None
        with self.leader.operation(op, fields, expected):
            broadcast_tensors(self.group, list(tensors))
            yield

    def share_trainer(
        self, optimizer: torch.optim.Optimizer, step: int, mixed: MixedPrecision
    ) -> int:
        """Rank 0's weights, optimizer and loss-scaler state to every rank; rank 0's step.

        Starts rank 0's heartbeat the first time.
        """
        extra = {"optimizer": optimizer.state_dict(), "step": step, "scaler": mixed.state_dict()}
        shared = share_state(self.group, self.model, extra)
        if self.leader is None:
            optimizer.load_state_dict(shared["optimizer"])
            mixed.load_state_dict(shared["scaler"])
        elif not self.leader.started:
            self.leader.start()
        return int(shared["step"])

    def digest(self) -> str:
        return weights_digest(self.model)

    def rates(self, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """The learning rate of each of ``optimizer``'s groups, to send with a batch."""
        rates = [float(group["lr"]) for group in optimizer.param_groups]
        return torch.tensor(rates, dtype=torch.float64, device=self.group.device)

    # -- the other ranks --------------------------------------------------------------

    def receive(self, shapes: Sequence[tuple[int, ...] | None], float64: int = -1) -> Tensors:
        """Tensors of ``shapes`` filled by rank 0's broadcast: float32, but the one at
        index ``float64``."""
        tensors: Tensors = [
            None
            if s is None
            else torch.empty(
                s,
                dtype=torch.float64 if i == float64 else torch.float32,
                device=self.group.device,
            )
            for i, s in enumerate(shapes)
        ]
        broadcast_tensors(self.group, tensors)
        return tensors

    def receive_batch(
        self, fields: Sequence[int], optimizer: torch.optim.Optimizer
    ) -> tuple[Tensors, int]:
        """The batch of a ``TRAIN`` header's ``fields``, and its epochs; ``optimizer`` takes
        rank 0's learning rates."""
        size, steps, width, epochs, dendrite, coherence = fields[:6]
        shapes: list[tuple[int, ...] | None] = [(size, steps, width) if steps else (size, width)]
        shapes += [(size,)] + [(size, d) if d else None for d in (dendrite, coherence)]
        shapes.append((len(optimizer.param_groups),))
        received = self.receive(shapes, float64=len(shapes) - 1)
        rates = received.pop()
        assert rates is not None
        for group, rate in zip(optimizer.param_groups, rates.tolist(), strict=True):
            group["lr"] = rate
        return received, epochs

    # -- every rank -------------------------------------------------------------------

    def forward_loss(
        self, tensors: Tensors, loss_fn: LossFn
    ) -> tuple[CortezaOutput, LossTerms, torch.Tensor]:
        """This rank's forward and loss; the loss to step on, whose value is the batch's."""
        try:
            output, terms, local = self._local_loss(tensors, loss_fn)
        except torch.cuda.OutOfMemoryError:
            pass  # the failed forward's tensors are freed on leaving this block
        else:
            return output, terms, self._global(local * self.group.world_size, local)
        self._agree(torch.zeros((), device=self.group.device), failed=True)  # raises, everywhere
        raise AssertionError("unreachable: a rank that failed takes part in the failure")

    def _local_loss(
        self, tensors: Tensors, loss_fn: LossFn
    ) -> tuple[CortezaOutput, LossTerms, torch.Tensor]:
        """This rank's forward, its loss terms, and its share of the batch's loss."""
        inputs, labels, dendrite_target, coherence_target = tensors
        assert inputs is not None and labels is not None
        size = int(inputs.shape[0])
        start, end = self.group.bounds(size)
        n = end - start
        lo, hi = (start, end) if n else (0, 1)  # an empty slice: one sample, weighted zero
        part = [None if t is None else t[lo:hi] for t in tensors]
        assert part[0] is not None and part[1] is not None
        d_local, d_total = _target_rows(dendrite_target, start, end)
        c_local, c_total = _target_rows(coherence_target, start, end)
        output: CortezaOutput = self.ddp(part[0], d_total > 0, c_total > 0)
        terms = loss_fn(output, part[1], part[2], part[3])
        self._slice, self._rows = (size, start, end), (d_local, d_total, c_local, c_total)
        local = self.weights.anomaly * terms.anomaly * (n / size)
        if terms.dendrite is not None and d_local:
            local = local + self.weights.dendrite * terms.dendrite * (d_local / d_total)
        if terms.coherence is not None and c_local:
            local = local + self.weights.coherence * terms.coherence * (c_local / c_total)
        for trained, head in ((d_total, output.dendrites), (c_total, output.coherence)):
            if trained:  # a head the batch trains gets a gradient here too, zero if no row
                local = local + 0.0 * head.float().sum()
        if n == 0:
            local = local * 0.0
        return output, terms, local

    def _agree(self, share: torch.Tensor, failed: bool = False) -> torch.Tensor:
        """The all-reduced sum of ``share``; raises :class:`GroupOutOfMemoryError` on every
        rank when any rank says it ``failed`` (ran out of memory in its forward)."""
        flag = torch.full((1,), float(failed), device=share.device)
        value = torch.cat([share.detach().float().reshape(1), flag])
        dist.all_reduce(value)
        failures = int(value[1].item())
        if failures:
            raise GroupOutOfMemoryError(
                f"Out of device memory in the forward pass on {failures} of "
                f"{self.group.world_size} ranks; nothing of that step was applied"
            )
        return value[0]

    def _global(self, stepped: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
        """``stepped``'s gradient with the all-reduced sum of ``share`` as its value."""
        value = self._agree(share)
        return stepped + (value - stepped).detach()

    def outputs(self, output: CortezaOutput, terms: LossTerms) -> Summary:
        """The batch's per-sample probabilities and means, as one process reports them."""
        size, start, end = self._slice
        d_local, d_total, c_local, c_total = self._rows
        n = end - start
        live = 1.0 if n else 0.0
        device = output.dendrites.device
        zero = torch.zeros((), device=device)
        sums = torch.cat(
            [
                output.dendrites.detach().float().sum(dim=0) * live,
                output.coherence.detach().float().sum(dim=0) * live,
                torch.stack(
                    [
                        output.capa2_mean.float() * n,
                        output.capa3_mean.float() * n,
                        output.capa4_mean.float() * n,
                        terms.anomaly.detach().float() * n,
                        zero
                        if terms.dendrite is None
                        else terms.dendrite.detach().float() * d_local,
                        zero
                        if terms.coherence is None
                        else terms.coherence.detach().float() * c_local,
                    ]
                ),
            ]
        ).double()
        dist.all_reduce(sums)
        dendrite_dim = output.dendrites.shape[1]
        coherence_dim = output.coherence.shape[1]
        means = (sums / size).cpu()
        tail = sums[dendrite_dim + coherence_dim :].cpu().tolist()
        head_losses: dict[str, float | None] = {
            "anomaly": tail[3] / size,
            "dendrite": tail[4] / d_total if d_total else None,
            "coherence": tail[5] / c_total if c_total else None,
        }
        capa = (tail[0] / size, tail[1] / size, tail[2] / size)
        return (
            self._gather_probabilities(probability_of(output).detach().float(), size, n),
            means[:dendrite_dim].tolist(),
            means[dendrite_dim : dendrite_dim + coherence_dim].tolist(),
            capa,
            head_losses,
        )

    def _gather_probabilities(self, local: torch.Tensor, size: int, n: int) -> NDArray[np.float32]:
        world = self.group.world_size
        longest = -(-size // world)
        padded = torch.zeros(longest, dtype=torch.float32, device=local.device)
        padded[:n] = local[:n]
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        pieces = []
        for rank, part in enumerate(parts):
            lo, hi = self.group.bounds(size, rank)
            pieces.append(part[: hi - lo])
        return torch.cat(pieces).cpu().numpy()

    # -- feedback steps on the dendrite head ------------------------------------------

    def feedback_prediction(self, inputs: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The dendrite head's output on this rank's slice of a feedback batch (through DDP),
        and the slice's share of the batch (0 for an empty slice: one sample, weighted 0)."""
        size = int(inputs.shape[0])
        start, end = self.group.bounds(size)
        part, share = (
            (inputs[:1], 0.0) if end == start else (inputs[start:end], (end - start) / size)
        )
        prediction: torch.Tensor = self.ddp(part, False, False, feedback=True)
        return prediction, share

    def feedback_loss(self, loss: torch.Tensor, share: float) -> torch.Tensor:
        """A feedback loss to step on: this rank's gradient, the whole batch's value."""
        weighted = loss * share
        return self._global(weighted * self.group.world_size, weighted)
