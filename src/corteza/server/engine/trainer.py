"""The trainer: owns the model, the optimizer and the device.

Only the training worker's thread calls into a :class:`Trainer`; nothing here
knows about HTTP.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from corteza.model import (
    CortezaCognitiva,
    CortezaOutput,
    LossTerms,
    LossWeights,
    ModelConfig,
    anomaly_probability,
    corteza_loss,
    count_parameters,
)
from corteza.server.distributed.control import Op
from corteza.server.distributed.group import current as current_group
from corteza.server.distributed.group import leave as leave_group
from corteza.server.distributed.shard import GroupOutOfMemoryError, Shard, Tensors
from corteza.server.engine.compilation import CompiledForward
from corteza.server.engine.device import resolve_device
from corteza.server.engine.memory import MemoryMeter
from corteza.server.engine.precision import MixedPrecision, StepOutcome, precision_for
from corteza.server.engine.staging import StagedArrays, Staging
from corteza.server.settings import Settings
from corteza.wire import Batch

logger = logging.getLogger(__name__)

PREDICT_CHUNK = 256  # samples per forward pass when predicting


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or Inf; the step that produced it was not applied.

    ``partial`` is what the epochs before it applied (None when it was the first):
    those steps are in the weights, so the worker records the batch as trained
    with that many epochs rather than let a retry train them a second time.
    """

    def __init__(self, message: str, partial: TrainResult | None = None) -> None:
        super().__init__(message)
        self.partial = partial


@dataclass(frozen=True)
class TrainResult:
    """What one batch of training produced."""

    batch_size: int
    epochs: int
    losses: list[float]  # loss of each optimizer step, before that step's update
    probabilities: NDArray[np.float32]  # (B,) anomaly probability, last step
    dendrites: list[float]  # mean over the batch, last step
    coherence: list[float]  # mean over the batch, last step
    capa_means: tuple[float, float, float]  # mean activation of Capa2, Capa3, Capa4
    step: int  # optimizer steps taken since the run began, after this batch
    seconds: float  # wall time of the training work
    head_losses: dict[str, float | None] | None = None  # per head, last step
    skipped_steps: int = 0  # fp16 steps the loss scaler skipped: nothing applied

    @property
    def loss(self) -> float:
        return self.losses[-1]


@dataclass(frozen=True)
class Predictions:
    """Per-sample outputs in eval mode."""

    probabilities: NDArray[np.float32]  # (B,)
    dendrites: NDArray[np.float32]  # (B, dendrite_dim)
    coherence: NDArray[np.float32]  # (B, coherence_dim)


@dataclass(frozen=True)
class Diagnosis:
    input_shape: list[int]
    anomaly_shape: list[int]
    dendrite_shape: list[int]
    coherence_shape: list[int]


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, fused where this torch supports it.

    On a 2-core CPU the fused step takes 0.06 s for the default model against
    0.33 s for the per-parameter loop: most of a batch-32 step.
    """
    try:
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):  # older torch, or a device without a fused kernel
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


class Trainer:
    """Model + optimizer + device, configured from :class:`Settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config: ModelConfig = settings.model
        self.group = current_group()  # torch.distributed: one device per rank, DDP below
        self.device = self.group.device if self.group else resolve_device(settings.device)
        self.precision = precision_for(self.device, settings.precision)  # or PrecisionError
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        self.model = CortezaCognitiva(self.config).to(self.device)
        self.model.train()
        self.optimizer = make_optimizer(self.model, settings.lr, settings.weight_decay)
        heads = (settings.loss_weight_anomaly, settings.loss_weight_dendrite)
        self.loss_weights = LossWeights(*heads, settings.loss_weight_coherence)
        self.step = 0
        self.parameter_count = count_parameters(self.model)
        self.trainable_count = count_parameters(self.model, trainable_only=True)
        self.mixed = MixedPrecision(self.precision, self.device)
        self.staging = Staging(self.device)
        self._prefetched: tuple[Batch, StagedArrays] | None = None
        # The batch queued after the one training, copied to the GPU meanwhile (the worker's).
        self.upcoming: Callable[[], Batch | None] = lambda: None
        # Under torch.distributed, the DDP wrap of the model; no torch.compile there.
        self.shard = Shard(self.group, self.model, self.loss_weights) if self.group else None
        if self.shard is not None and settings.compile:
            logger.warning("--compile is off under torch.distributed: the DDP forward runs eager")
        self.forward = CompiledForward(
            self.model, enabled=settings.compile and self.shard is None, mode=settings.compile_mode
        )
        gradients = sum(p.numel() * p.element_size() for p in self.model.parameters())
        self.memory = MemoryMeter(self.device, fixed_bytes=gradients)
        logger.info(
            "training in %s (%s)%s",
            self.precision.name,
            self.precision.why,
            f", torch.compile mode {settings.compile_mode}" if settings.compile else "",
        )
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def prefetch(self, batch: Batch) -> None:
        """Start copying ``batch`` to the GPU; :meth:`train_batch` of it then finds it there."""
        if self.staging.cuda:
            self._prefetched = batch, self._stage(batch)

    def _stage(self, batch: Batch) -> StagedArrays:
        arrays = [batch.inputs, batch.labels, batch.dendrite_target, batch.coherence_target]
        return self.staging.stage(arrays)

    def train_batch(self, batch: Batch) -> TrainResult:
        """Take ``batch.epochs`` optimizer steps on one validated batch.

        The batch :attr:`upcoming` names is copied to the GPU while this one
        trains. Raises :class:`TrainingDivergedError` for a loss that is not finite,
        and :class:`~corteza.server.engine.memory.DeviceOutOfMemoryError` (nothing
        applied; it names a batch size that fits) for a batch the GPU cannot hold.
        """
        steps_per_sample = batch.inputs.shape[1] if batch.inputs.ndim == 3 else 1
        self.memory.batch_started()
        out_of_memory = False
        try:
            result = self._train(batch)
        except torch.cuda.OutOfMemoryError:
            out_of_memory = True  # handled once the failed step's tensors are released
        if out_of_memory:
            self.optimizer.zero_grad(set_to_none=True)
            self._prefetched = None
            raise self.memory.out_of_memory(batch.size, steps_per_sample)
        self.memory.batch_done(batch.size, steps_per_sample)
        return result

    def _train(self, batch: Batch) -> TrainResult:
        started = time.perf_counter()
        prefetched, self._prefetched = self._prefetched, None
        staged = prefetched[1] if prefetched and prefetched[0] is batch else self._stage(batch)
        tensors = staged.tensors()
        if self.shard is None:
            return self._steps(tensors, batch.size, batch.epochs, started)
        tensors = [None if t is None else t.float().contiguous() for t in tensors]  # as received
        shape = batch.inputs.shape
        fields = [batch.size, shape[1] if len(shape) == 3 else 0, shape[-1], batch.epochs]
        fields += [0 if t is None else t.shape[-1] for t in tensors[2:]]
        rates = self.shard.rates(self.optimizer)  # a job's schedule sets them on rank 0
        # Every rank takes these alike; any other error ends the group (torchrun restarts it).
        expected = (TrainingDivergedError, GroupOutOfMemoryError)
        with self.shard.leading(Op.TRAIN, fields, [*tensors, rates], expected):
            return self._steps(tensors, batch.size, batch.epochs, started)

    def follow(self, fields: list[int]) -> None:
        """A rank but 0: train this rank's slice of the batch rank 0 announced."""
        assert self.shard is not None
        tensors, epochs = self.shard.receive_batch(fields, self.optimizer)
        out_of_memory = False
        try:
            self._steps(tensors, int(fields[0]), epochs, time.perf_counter())
        except TrainingDivergedError:
            pass  # rank 0 answers it
        except GroupOutOfMemoryError:
            out_of_memory = True  # rank 0 answers it; released once the step's tensors are
        if out_of_memory:
            self.optimizer.zero_grad(set_to_none=True)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def share_state(self) -> None:
        """Under torch.distributed: rank 0's weights, optimizer state and step to every rank."""
        if self.shard is not None:
            self.step = self.shard.share_trainer(self.optimizer, self.step, self.mixed)

    def state_replaced(self) -> None:
        """Rank 0 loaded another checkpoint: the other ranks take its state too."""
        if self.shard is not None and self.shard.leader is not None:
            with self.shard.leader.operation(Op.LOAD):
                self.share_state()

    def close(self) -> None:
        """Under torch.distributed: tell the other ranks to stop (rank 0)."""
        if self.shard is not None and self.shard.leader is not None:
            logger.info("rank 0 stops at step %d, weights %s", self.step, self.shard.digest())
            self.shard.leader.stop()
            leave_group()

    def _steps(self, tensors: Tensors, size: int, epochs: int, started: float) -> TrainResult:
        """``epochs`` optimizer steps over staged tensors (this rank's slice, under DDP)."""
        inputs, labels, dendrite_target, coherence_target = tensors
        assert inputs is not None and labels is not None
        losses: list[float] = []
        skipped = 0
        applied: tuple[CortezaOutput, LossTerms] | None = None  # of the last applied step
        self.model.train()
        for epoch in range(epochs):
            try:
                outcome, output, terms = self._epoch(
                    inputs, labels, dendrite_target, coherence_target, epoch
                )
            except torch.cuda.OutOfMemoryError as exc:
                # Under DDP only the ranks' agreed error (in the forward) leaves the group sound.
                agreed = self.shard is None or isinstance(exc, GroupOutOfMemoryError)
                if applied is None or not agreed:
                    raise  # nothing applied: train_batch answers out_of_memory
                self.optimizer.zero_grad(set_to_none=True)
                self._prefetched = None
                raise TrainingDivergedError(
                    f"Out of device memory at epoch {epoch + 1} of this batch; that step was "
                    f"not applied, the {epoch} before it were and count as this batch",
                    self._result(size, losses, *applied, started, skipped),
                ) from None
            loss = outcome.loss
            if not np.isfinite(loss):
                self.optimizer.zero_grad(set_to_none=True)
                if applied is None:
                    raise TrainingDivergedError(
                        f"Training diverged: the loss became {loss} at epoch {epoch + 1} of "
                        "this batch; that step was not applied"
                    )
                raise TrainingDivergedError(
                    f"Training diverged: the loss became {loss} at epoch {epoch + 1} of this "
                    f"batch; that step was not applied, the {epoch} before it were and count "
                    "as this batch",
                    self._result(size, losses, *applied, started, skipped),
                )
            if outcome.skipped:
                skipped += 1  # the scaler's overflow: not divergence, the batch still counts
            else:
                self.step += 1
            losses.append(loss)
            applied = output, terms
        assert applied is not None  # epochs >= 1 is validated upstream
        return self._result(size, losses, *applied, started, skipped)

    def _epoch(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        dendrite_target: torch.Tensor | None,
        coherence_target: torch.Tensor | None,
        epoch: int,
    ) -> tuple[StepOutcome, CortezaOutput, LossTerms]:
        """One optimizer step over the batch (the device's out-of-memory error escapes)."""
        self.optimizer.zero_grad(set_to_none=True)
        tensors = [inputs, labels, dendrite_target, coherence_target]
        with self.mixed.autocast():
            if self.shard is None:
                output = self.forward(inputs)
                terms = self._loss(output, labels, dendrite_target, coherence_target)
                total = terms.total
            else:  # this rank's slice; the value of ``total`` is the whole batch's loss
                output, terms, total = self.shard.forward_loss(tensors, self._loss)
        prefetch = epoch == 0 and self.staging.cuda and self.shard is None
        if prefetch and (upcoming := self.upcoming()) is not None:
            self.prefetch(upcoming)  # its copy overlaps this batch's compute
        outcome = self.mixed.step(
            total, self.optimizer, self.model.parameters(), self.settings.max_grad_norm
        )
        return outcome, output, terms

    def _loss(
        self,
        output: CortezaOutput,
        labels: torch.Tensor,
        dendrite_target: torch.Tensor | None,
        coherence_target: torch.Tensor | None,
    ) -> LossTerms:
        return corteza_loss(
            output,
            labels,
            dendrite_target=dendrite_target,
            coherence_target=coherence_target,
            weights=self.loss_weights,
            pos_weight=self.settings.pos_weight,
        )

    def _result(
        self,
        size: int,
        losses: list[float],
        output: CortezaOutput,
        terms: LossTerms,
        started: float,
        skipped: int = 0,
    ) -> TrainResult:
        """The result of ``len(losses)`` applied steps; outputs from the last one's forward."""
        if self.shard is not None:  # the whole batch's, gathered from every rank
            probabilities, dendrites, coherence, capa_means, head_losses = self.shard.outputs(
                output, terms
            )
        else:
            head_losses = {
                "anomaly": float(terms.anomaly.detach()),
                "dendrite": None if terms.dendrite is None else float(terms.dendrite.detach()),
                "coherence": None if terms.coherence is None else float(terms.coherence.detach()),
            }
            probabilities = anomaly_probability(output).detach().float().cpu().numpy()
            dendrites = output.dendrites.detach().float().mean(dim=0).cpu().tolist()
            coherence = output.coherence.detach().float().mean(dim=0).cpu().tolist()
            capa_means = (
                float(output.capa2_mean),
                float(output.capa3_mean),
                float(output.capa4_mean),
            )
        return TrainResult(
            batch_size=size,
            epochs=len(losses),
            losses=list(losses),
            probabilities=probabilities,
            dendrites=dendrites,
            coherence=coherence,
            capa_means=capa_means,
            step=self.step,
            seconds=time.perf_counter() - started,
            head_losses=head_losses,
            skipped_steps=skipped,
        )

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        """Eval mode and no gradients; training mode is restored afterwards."""
        self.model.eval()
        try:
            with torch.no_grad(), self.mixed.autocast():
                yield
        finally:
            self.model.train()

    def predict(self, inputs: NDArray[np.float32], chunk: int = PREDICT_CHUNK) -> Predictions:
        """Outputs for validated inputs; weights, optimizer and RNG are left alone."""
        probs, dendrites, coherence = [], [], []
        with self._evaluating():
            for start in range(0, inputs.shape[0], chunk):
                out = self.model(self.staging.to_device(inputs[start : start + chunk]))
                probs.append(anomaly_probability(out).float().cpu())
                dendrites.append(out.dendrites.float().cpu())
                coherence.append(out.coherence.float().cpu())
        return Predictions(
            torch.cat(probs).numpy(), torch.cat(dendrites).numpy(), torch.cat(coherence).numpy()
        )

    def diagnose(self, batch_size: int = 2) -> Diagnosis:
        """One forward pass in eval mode on a random input; training is unaffected."""
        generator = torch.Generator().manual_seed(0)  # leaves the global RNG alone
        x = torch.randn(batch_size, 1, self.config.input_dim, generator=generator)
        with self._evaluating():
            out = self.model(x.to(self.device))
        return Diagnosis(
            input_shape=list(x.shape),
            anomaly_shape=list(out.anomaly_logits.shape),
            dendrite_shape=list(out.dendrites.shape),
            coherence_shape=list(out.coherence.shape),
        )
