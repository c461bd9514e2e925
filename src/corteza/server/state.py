"""Everything the routes share, built once in the lifespan."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from corteza.server.checkpoints.checkpointer import Checkpointer
from corteza.server.checkpoints.uploads import CheckpointUploads, upload_budget
from corteza.server.datasets.store import DatasetStore
from corteza.server.datasets.uploads import DatasetUploads
from corteza.server.engine.device import device_label, device_name, gpu_memory_mb
from corteza.server.engine.feedback import DendriteFeedback
from corteza.server.engine.runs import RunBook
from corteza.server.engine.stats import TrainingStats
from corteza.server.engine.trainer import Trainer
from corteza.server.engine.worker import TrainingWorker
from corteza.server.jobs.runner import JobRunner
from corteza.server.observe.bus import EventBus
from corteza.server.observe.events import TrainingEvents
from corteza.server.observe.prometheus import ServerMetrics
from corteza.server.observe.webhooks import WebhookSender
from corteza.server.settings import Settings

MODEL_NAME = "CortezaCognitiva"


@dataclass
class ServerState:
    settings: Settings
    trainer: Trainer
    stats: TrainingStats
    runs: RunBook
    checkpointer: Checkpointer
    worker: TrainingWorker
    events: EventBus
    training_events: TrainingEvents
    metrics: ServerMetrics
    webhooks: WebhookSender
    uploads: CheckpointUploads
    datasets: DatasetStore
    dataset_uploads: DatasetUploads
    started: float = field(default_factory=time.monotonic)
    jobs: JobRunner = field(init=False)  # started by the app's lifespan, in its event loop

    def __post_init__(self) -> None:
        self.jobs = JobRunner(
            self.settings,
            self.worker,
            self.runs,
            self.checkpointer,
            self.datasets,
            self.events,
            self.training_events,
        )

    @classmethod
    def build(cls, settings: Settings) -> ServerState:
        """The model, resumed from the newest checkpoint that verifies, and its worker."""
        trainer = Trainer(settings)
        stats = TrainingStats()
        runs = RunBook(keep=settings.runs_keep, ttl=settings.runs_keep_hours * 3600)
        events = EventBus()
        checkpointer = Checkpointer(settings, trainer, stats, runs, events)
        checkpointer.resume()
        trainer.share_state()  # torch.distributed: rank 0's resumed state to every rank
        training_events = TrainingEvents(
            events,
            margin=settings.notify_margin,
            loss_below=settings.notify_loss_below,
            stall_seconds=settings.stall_minutes * 60,
            best_loss=stats.best_loss,
        )
        feedback = DendriteFeedback(trainer, settings.feedback_lr)
        worker = TrainingWorker(trainer, stats, runs, checkpointer, feedback, training_events)
        metrics = ServerMetrics(stats, worker, trainer)
        secret = settings.webhook_secret
        webhooks = WebhookSender(
            settings.webhooks,
            secret=None if secret is None else secret.get_secret_value(),
            fmt=settings.webhook_format,
        )
        events.add_listener(metrics.on_event)
        if settings.webhooks:
            events.add_listener(webhooks.on_event)
            webhooks.start()
        training_events.start()
        datasets = DatasetStore(
            settings.data_root,
            max_bytes=int(settings.max_data_gb * 1e9),
            exclusive=settings.data_root_chosen,
        )
        return cls(
            settings,
            trainer,
            stats,
            runs,
            checkpointer,
            worker,
            events,
            training_events,
            metrics,
            webhooks,
            CheckpointUploads(checkpointer.root, upload_budget(trainer.model)),
            datasets,
            DatasetUploads(datasets),
        )

    def statistics(self) -> dict[str, Any]:
        """The seed's ``estadisticas`` block, device fields included."""
        device = self.trainer.device
        allocated, reserved = gpu_memory_mb(device)
        return {
            **self.stats.snapshot(),
            "dispositivo": device_label(device),
            "gpu_memoria_mb": round(allocated, 1),
            "device": str(device),
            "device_name": device_name(device),
            "gpu_memory_reserved_mb": round(reserved, 1),
            "precision": self.trainer.precision.name,
            **self.trainer.memory.snapshot(),  # peak_memory_mb
        }

    @property
    def cuda_available(self) -> bool:
        return torch.cuda.is_available()

    def close(self) -> None:
        """Finish the work queued, stop the watchers, deliver the last webhooks."""
        self.worker.shutdown()
        self.trainer.close()  # torch.distributed: the other ranks stop
        self.training_events.close()
        if self.settings.webhooks:
            self.webhooks.close()
        self.events.close()
        self.uploads.close()
        self.datasets.close()  # its data folder's lock: another server may use it now
