"""Client and AsyncClient against jobs on a real uvicorn; a streamed run beside a job."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from corteza.client import AsyncClient, Client, NotFoundError, make_dataset, save_dataset
from corteza.client.training.fit import fit
from tests.conftest import LiveServer


@pytest.fixture
def server(checkpointed_server: LiveServer) -> LiveServer:
    return checkpointed_server


def test_a_job_started_and_watched_from_the_client(server: LiveServer, tmp_path: Path) -> None:
    path = save_dataset(make_dataset(120, input_dim=32, seed=4), tmp_path / "data.npz")
    with Client(server.url) as client:
        sha = client.upload_dataset(path)
        job = client.start_job(sha, epochs=2, batch_size=16, holdout=0.25)
        seen = list(client.watch_job(job.id, interval=0.05))
        listed = client.jobs()
        with pytest.raises(NotFoundError, match="No job 'abc' on this server"):
            client.job("abc")
        with pytest.raises(ValueError, match="epochs"):
            client.start_job(sha, epochs=0)
    final = seen[-1]
    assert final.state == "finished" and final.id == job.id
    assert final.samples_trained == 90 * 2 and final.cursor == final.total_batches == 12
    assert [e.epoch for e in final.epochs_scored] == [0, 1]
    assert all(e.holdout_auc is not None for e in final.epochs_scored)
    assert [r.cursor for r in seen] == sorted(r.cursor for r in seen)
    assert [j.id for j in listed] == [job.id]


def test_the_async_client_starts_watches_and_cancels(server: LiveServer) -> None:
    data = make_dataset(400, input_dim=32, seed=5)
    sha = server.state.datasets.add_arrays(data.X, data.y).sha256

    async def scenario() -> tuple[list[str], str, int]:
        async with AsyncClient(server.url) as client:
            job = await client.start_job(sha, epochs=100, batch_size=4, holdout=0)
            states = []
            async for record in client.watch_job(job.id, interval=0.02):
                states.append(record.state)
                if record.cursor >= 3 and len(states) < 1000:
                    cancelled = await client.cancel_job(job.id)
                    states.append(cancelled.state)
                    break
            final = await client.job(job.id)
            return states, final.state, final.cursor

    states, state, cursor = asyncio.run(scenario())
    assert states[-1] == "cancelled" and state == "cancelled"
    assert server.state.stats.total_batches == cursor


def test_a_streamed_run_and_a_job_at_the_same_time_both_finish_exactly(
    server: LiveServer,
) -> None:
    job_data = make_dataset(300, input_dim=32, seed=6)
    sha = server.state.datasets.add_arrays(job_data.X, job_data.y).sha256
    streamed = make_dataset(400, input_dim=32, seed=7)  # 150 batches: it outlasts the job's
    results = {}

    def stream() -> None:
        with Client(server.url) as other:
            results["fit"] = fit(other, streamed.X, streamed.y, epochs=3, batch_size=8)

    thread = threading.Thread(target=stream)
    thread.start()
    deadline = time.monotonic() + 60
    while server.state.stats.total_batches < 2:  # the stream is under way
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    with Client(server.url) as client:
        job = client.start_job(sha, epochs=3, batch_size=8, holdout=0.2)
        record = list(client.watch_job(job.id, interval=0.05))[-1]
        thread.join(120)
        status = client.status().estadisticas
    summary = results["fit"]
    assert record.state == "finished"
    assert record.samples_trained == 240 * 3
    assert summary.samples == 400 * 3
    assert status.total_muestras == 240 * 3 + 400 * 3  # nothing lost, nothing twice
    assert status.total_batches == record.total_batches + summary.batches
    seqs = server.state.runs.next_seqs()
    assert seqs[record.run_id] == 90 and seqs[summary.run_id] == 150
    order = [e.data["run_id"] for e in server.state.events.recent() if e.type == "batch_trained"]
    job_batches = [i for i, run_id in enumerate(order) if run_id == record.run_id]
    between = order[job_batches[0] : job_batches[-1]]
    assert summary.run_id in between  # the client's batches trained while the job ran
