"""The training worker: one thread owns the model; handlers hand it work and await.

Request handlers never compute on the event loop. They submit a job here and
``await`` its result, so ``/health`` and ``/status`` answer in milliseconds
while a batch trains.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from corteza.server.stats import TrainingStats
from corteza.server.trainer import Diagnosis, Predictions, Trainer, TrainResult
from corteza.wire import Batch

logger = logging.getLogger(__name__)

T = TypeVar("T")


class TrainingWorker:
    """Runs every job that touches the model on one dedicated thread, in order."""

    def __init__(self, trainer: Trainer, stats: TrainingStats) -> None:
        self.trainer = trainer
        self.stats = stats
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corteza-trainer")
        self._pending = 0
        self._pending_lock = threading.Lock()

    @property
    def queue_depth(self) -> int:
        """Jobs submitted and not finished (the one running included)."""
        return self._pending

    async def run(self, job: Callable[[], T]) -> T:
        """Run ``job`` on the worker thread and await its result."""
        with self._pending_lock:
            self._pending += 1
        # Counted down when the job ends, even if the awaiting request went away.
        future = self._executor.submit(job)
        future.add_done_callback(self._done)
        return await asyncio.wrap_future(future)

    def _done(self, _: object) -> None:
        with self._pending_lock:
            self._pending -= 1

    async def train(self, batch: Batch) -> TrainResult:
        def job() -> TrainResult:
            result = self.trainer.train_batch(batch)
            self.stats.record_batch(result)
            return result

        return await self.run(job)

    async def predict(self, inputs: NDArray[np.float32]) -> Predictions:
        return await self.run(lambda: self.trainer.predict(inputs))

    async def diagnose(self) -> Diagnosis:
        return await self.run(self.trainer.diagnose)

    def shutdown(self) -> None:
        """Finish the job in hand, drop queued ones, stop the thread."""
        self._executor.shutdown(wait=True, cancel_futures=True)
