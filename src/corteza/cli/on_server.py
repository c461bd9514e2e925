"""``corteza train DATA --on-server``: upload the file once, train it on the server, follow.

The file is checked here (bad rows never leave the PC), hashed and uploaded
unless the server has it (``corteza datasets upload``'s bar; a cut upload
resumes), then a job trains it on the server: the PC may sleep meanwhile.
The command follows the job with the usual bar and summary plus each epoch's
holdout ROC-AUC; Ctrl-C detaches and says how to re-attach
(``corteza jobs watch ID``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from corteza.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, clear_errors, console, fail, target
from corteza.cli.datasets import upload_bar
from corteza.cli.jobs import follow
from corteza.cli.training import RunOptions
from corteza.client import Client
from corteza.client.data.datasets import open_dataset
from corteza.wire.jobs import DEFAULT_LR_SCHEDULE

OnServerOption = typer.Option(
    False,
    "--on-server",
    help="Upload DATA once (skipped when the server has it) and train it on the server as a "
    "job that goes on without this PC; Ctrl-C detaches (corteza jobs watch ID re-attaches). "
    "Uses --epochs, --batch-size, --holdout, --seed, --feedback-every, --until-loss, "
    "--lr-schedule and --patience.",
)
LrScheduleOption = typer.Option(
    DEFAULT_LR_SCHEDULE,
    "--lr-schedule",
    help="With --on-server: cosine (warmup, then decay to a tenth of the server's rate) or "
    "none (the server's rate throughout).",
)
PatienceOption = typer.Option(
    None,
    "--patience",
    min=1,
    help="With --on-server: stop when the holdout ROC-AUC has not improved for N epochs.",
)


def train_on_server(
    data: Path,
    server: str | None,
    token: str | None,
    options: RunOptions,
    holdout: float,
    schedule: tuple[str, int | None],
    as_json: bool,
    debug: bool,
) -> None:
    """Upload, start the job, follow it; exits as ``corteza train`` does."""
    lr_schedule, patience = schedule
    if lr_schedule not in ("none", "cosine"):
        fail(
            f"--lr-schedule must be none or cosine, got {lr_schedule!r}",
            EXIT_BAD_INPUT,
            as_json=as_json,
            error_type="invalid_option",
        )
    with clear_errors(debug, as_json=as_json):
        chosen = target(server)
    if chosen.origin is None:
        fail(
            "--on-server needs a server to train on: pass --server URL, set CORTEZA_URL, or "
            "run `corteza connect URL`",
            EXIT_BAD_INPUT,
            as_json=as_json,
            error_type="no_server",
        )
    with (
        clear_errors(debug, as_json=as_json, server=chosen),
        Client(chosen.url, token=token) as client,
    ):
        dataset = open_dataset(data)  # every row checked before a byte is sent
        if not as_json:
            console.print(
                f"Data: {data.name}, {len(dataset)} samples; checking the server's copy...",
                highlight=False,
                soft_wrap=True,
            )
        try:
            with upload_bar(data.name, quiet=as_json) as bar:
                sha256 = client.upload_dataset(data, progress=bar)
        except KeyboardInterrupt:
            fail(
                "interrupted during the upload: the same command resumes it where it stopped",
                EXIT_INTERRUPTED,
                as_json=as_json,
                error_type="interrupted",
            )
        job = client.start_job(
            sha256,
            epochs=options.epochs,
            batch_size=options.batch_size,
            holdout=holdout,
            seed=options.seed,
            feedback_every=options.feedback_every,
            until_loss=options.until_loss,
            patience=patience,
            lr_schedule=lr_schedule,
        )
        if not as_json:
            sent = "on the server already" if bar.resumed_from is None else "uploaded"
            console.print(
                f"Dataset {sha256[:16]} {sent}. Job {job.id} started on {chosen.url}: "
                f"{options.epochs} epoch(s) of batch {options.batch_size}, {holdout:g} held "
                f"out. Ctrl-C detaches; the job goes on.",
                highlight=False,
                soft_wrap=True,
            )
        follow(client, job.id, as_json=as_json, server_hint=server)
