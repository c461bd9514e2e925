"""The ranks but 0: no HTTP, no checkpoints; they do what rank 0's headers say.

A follower builds the same trainer (its DDP wrap joins rank 0's), takes rank
0's weights, optimizer state and counters, then waits on the control group
for the next header: train a slice of a batch, take a feedback step, load
rank 0's state again, a heartbeat, or stop. Anything else that goes wrong
(rank 0 died, a wait ran past the timeout) raises: the rank exits non-zero and
torchrun restarts the group.

SIGTERM (torchrun stopping the group, or the launcher's death) is not the end
of a follower: it waits for rank 0, which finishes its work, saves, and sends
``STOP``, or whose exit ends the follower's wait.
"""

from __future__ import annotations

import logging
import signal
import types

from corteza.server.distributed.control import Op, receive_header
from corteza.server.distributed.group import DistributedGroup, leave
from corteza.server.distributed.shard import weights_digest
from corteza.server.engine.feedback import DendriteFeedback
from corteza.server.engine.trainer import Trainer
from corteza.server.settings import Settings

logger = logging.getLogger(__name__)


def _stay(signum: int, frame: types.FrameType | None) -> None:
    logger.info("signal %d: waiting for rank 0 to stop the group", signum)


def follow(settings: Settings, group: DistributedGroup) -> None:
    """Serve rank 0 until it says stop (returns) or the group fails (raises)."""
    signal.signal(signal.SIGTERM, _stay)
    signal.signal(signal.SIGINT, _stay)
    trainer = Trainer(settings)
    feedback = DendriteFeedback(trainer, settings.feedback_lr)
    trainer.share_state()
    logger.info("rank %d follows rank 0 (step %d)", group.rank, trainer.step)
    operations = 0
    while True:
        op, fields = receive_header(group)
        if op is Op.STOP:
            break
        if op is Op.TRAIN:
            trainer.follow(fields)
        elif op is Op.FEEDBACK:
            feedback.follow(fields)
        elif op is Op.LOAD:
            trainer.share_state()
        operations += op is not Op.HEARTBEAT
    logger.info(
        "rank %d stops at step %d, weights %s (%d operations)",
        group.rank,
        trainer.step,
        weights_digest(trainer.model),
        operations,
    )
    leave()
