"""``corteza jobs [list | show ID | watch ID | cancel ID]``: jobs that train on the server.

:func:`follow` is the progress of a job, for ``watch`` and for ``corteza train
--on-server``: the same bar and summary as a streamed run, plus each epoch's
holdout ROC-AUC. Ctrl-C detaches: the job goes on, and the line printed says
how to re-attach.
"""

from __future__ import annotations

import time
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from corteza.cli.common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_TARGET_MISSED,
    Command,
    DebugOption,
    Group,
    JsonOption,
    ServerOption,
    TokenOption,
    console,
    print_json,
    server_client,
)
from corteza.cli.interrupts import sigterm_as_interrupt
from corteza.cli.progress import TrainingProgress, training_progress
from corteza.cli.training import print_summary
from corteza.client import Client
from corteza.client.training.progress import Ack, BatchReport
from corteza.wire.jobs import JobRecord

stdout = Console(soft_wrap=True)  # results go to stdout, progress to stderr
POLL = 0.5  # seconds between two looks at the job

app = typer.Typer(
    name="jobs",
    help="Jobs that train on the server (corteza train DATA --on-server starts one).",
    cls=Group,
    invoke_without_command=True,
    no_args_is_help=False,
)
JobIdArgument = typer.Argument(..., metavar="ID", help="The job's id (corteza jobs lists them).")


@app.callback()
def jobs(
    ctx: typer.Context,
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Jobs that train on the server; with no command, the list."""
    if ctx.invoked_subcommand is None:
        list_jobs(server=server, token=token, as_json=as_json, debug=debug)
    elif server is not None or token is not None or as_json or debug:
        raise typer.BadParameter(
            f"put the options after the command: corteza jobs {ctx.invoked_subcommand} ..."
        )


@app.command("list", cls=Command)
def list_jobs(
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """List the server's jobs, oldest first: state, dataset, progress, best holdout ROC-AUC."""
    with server_client(server, token, as_json=as_json, debug=debug) as c:
        found = c.jobs()
    if as_json:
        print_json([job.model_dump() for job in found])
        return
    if not found:
        typer.echo("No jobs on the server: `corteza train DATA --on-server` starts one.")
        return
    id_column = Column("id", no_wrap=True, min_width=12)  # what watch, show and cancel take
    table = Table(id_column, "state", "dataset", "batches", "epoch", "best AUC", "started")
    for job in found:
        started = time.strftime("%H:%M", time.localtime(job.started or job.created))
        row = (
            job.id,
            job.state,
            job.dataset_name or job.spec.dataset[:16],
            f"{job.cursor}/{job.total_batches}",
            f"{min(job.epoch + 1, job.spec.epochs)}/{job.spec.epochs}",
            "-" if job.best_auc is None else f"{job.best_auc:.4f}",
            started,
        )
        table.add_row(*(escape(cell) for cell in row))  # the server's text, not markup
    stdout.print(table)


@app.command("show", cls=Command)
def show(
    job_id: str = JobIdArgument,
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """One job: its spec, where it stands, each epoch's holdout score."""
    with server_client(server, token, as_json=as_json, debug=debug) as c:
        job = c.job(job_id)
    if as_json:
        print_json(job.model_dump())
        return
    spec = job.spec
    stdout.print(  # the server's text, printed as it is (never read as markup)
        f"job {job.id}: {job.state}"
        + ("" if job.stop_reason is None else f" ({job.stop_reason})")
        + f", batch {job.cursor}/{job.total_batches}, {job.samples_trained} samples trained\n"
        f"dataset {job.dataset_name or '?'} ({spec.dataset[:16]}): {job.train_samples} to "
        f"train, {job.holdout_samples} held out; {spec.epochs} epoch(s) of batch "
        f"{spec.batch_size}, lr schedule {spec.lr_schedule}",
        highlight=False,
        markup=False,
    )
    if job.epochs_scored:
        stdout.print(epochs_table(job))
    if job.best_checkpoint:
        best = "?" if job.best_epoch is None else job.best_epoch + 1
        stdout.print(
            f"best checkpoint (epoch {best}): {job.best_checkpoint}", markup=False, highlight=False
        )


@app.command("watch", cls=Command)
def watch(
    job_id: str = JobIdArgument,
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Follow a job with a progress bar until it ends; Ctrl-C detaches, the job goes on."""
    with server_client(server, token, as_json=as_json, debug=debug) as c:
        follow(c, job_id, as_json=as_json, server_hint=server)


@app.command("cancel", cls=Command)
def cancel(
    job_id: str = JobIdArgument,
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Cancel a job: at once when queued, after its batches in flight when running."""
    with server_client(server, token, as_json=as_json, debug=debug) as c:
        job = c.cancel_job(job_id)
    if as_json:
        print_json(job.model_dump())
    else:
        typer.echo(f"job {job.id}: {job.state} at batch {job.cursor}/{job.total_batches}")


def epochs_table(job: JobRecord) -> Table:
    table = Table("epoch", "train loss", "holdout ROC-AUC", "holdout loss", title="Epochs")
    for e in job.epochs_scored:
        table.add_row(
            f"{e.epoch + 1}" + (" *" if e.epoch == job.best_epoch else ""),
            _fmt(e.train_loss, ".4f"),
            _fmt(e.holdout_auc, ".4f"),
            _fmt(e.holdout_loss, ".4f"),
        )
    return table


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def follow(client: Client, job_id: str, *, as_json: bool, server_hint: str | None) -> None:
    """Progress until the job ends, then the summary; Ctrl-C (or SIGTERM) detaches, exit 130.

    Exits 1 when the job failed, 130 when it was cancelled, 3 when ``until_loss`` was not met.
    """
    record: JobRecord | None = None
    try:
        with sigterm_as_interrupt(), training_progress(console, quiet=as_json) as progress:
            record = _track(client, job_id, progress)
    except KeyboardInterrupt:
        _detached(job_id, record, as_json, server_hint)
    assert record is not None
    result = job_result(record, client)
    if as_json:
        print_json(result)
    else:
        print_summary(result)
        if record.epochs_scored:
            Console().print(epochs_table(record))
    if record.state == "failed":
        raise typer.Exit(EXIT_FAILURE)
    if record.state == "cancelled":
        raise typer.Exit(EXIT_INTERRUPTED)
    if record.spec.until_loss is not None and not record.reached_target:
        raise typer.Exit(EXIT_TARGET_MISSED)


def _track(client: Client, job_id: str, progress: TrainingProgress) -> JobRecord:
    """Feed the bar from the job's record until the job ends; its last record."""
    attached = time.monotonic()
    first: JobRecord | None = None
    said: set[int] = set()
    for record in client.watch_job(job_id, interval=POLL):
        first = first or record
        if record.state == "queued" and record is first:
            ahead = [j for j in client.jobs() if not j.done and j.created < record.created]
            if ahead:
                progress.note(f"job {record.id} is queued behind {len(ahead)} job(s)")
        for e in record.epochs_scored:
            if e.epoch not in said:
                auc = "" if e.holdout_auc is None else f", holdout ROC-AUC {e.holdout_auc:.4f}"
                progress.note(f"epoch {e.epoch + 1}/{record.spec.epochs} done{auc}")
            said.add(e.epoch)
        if record.cursor:
            progress.update(
                BatchReport(
                    min(record.epoch, record.spec.epochs - 1),
                    record.cursor,
                    record.total_batches,
                    record.samples_trained - first.samples_trained,
                    None,
                    time.monotonic() - attached,
                    Ack(
                        seq=record.cursor - 1,
                        loss=record.last_loss,
                        anomaly_prob=record.last_anomaly_prob,
                    ),
                )
            )
        if record.done:
            return record
    raise AssertionError("watch_job ends with a job that has ended")  # pragma: no cover


def _detached(job_id: str, record: JobRecord | None, as_json: bool, server: str | None) -> NoReturn:
    where = "" if server is None else f" --server {server}"
    again = f"corteza jobs watch {job_id}{where}"
    if as_json:
        at = None if record is None else record.cursor
        print_json({"job_id": job_id, "detached": True, "cursor": at, "reattach": again})
    else:
        console.print(
            f"detached: job {job_id} goes on training on the server; follow it again with "
            f"`{again}`, stop it with `corteza jobs cancel {job_id}{where}`",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    raise typer.Exit(EXIT_INTERRUPTED)


def job_result(job: JobRecord, client: Client) -> dict[str, Any]:
    """The summary of ``corteza train``, from a job's record (and the server's trend)."""
    metrics = client.metrics()
    seconds = (job.finished or time.time()) - (job.started or job.created)
    last = job.epochs_scored[-1] if job.epochs_scored else None
    return {
        "samples": job.samples_trained,
        "batches": job.cursor,
        "first_loss": job.first_loss,
        "final_loss": job.last_loss,
        "mean_anomaly": None,
        "anomaly_rate": None,
        "seconds": seconds,
        "samples_per_second": job.samples_trained / seconds if seconds > 0 else None,
        "trend": metrics.tendencia,
        "feedback_rate": metrics.feedback_tasa_exito,
        "holdout_samples": job.holdout_samples,
        "roc_auc": None if last is None else last.holdout_auc,
        "until_loss": job.spec.until_loss,
        "reached_target": job.reached_target,
        "run_id": job.run_id,
        "transport": "job",
        "total_batches": job.total_batches,
        "interrupted": job.state == "cancelled",
        "job_id": job.id,
        "state": job.state,
        "stop_reason": job.stop_reason,
        "best_epoch": job.best_epoch,
        "best_auc": job.best_auc,
        "holdout_auc_per_epoch": [e.holdout_auc for e in job.epochs_scored],
    }
