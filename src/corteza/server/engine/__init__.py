"""The training engine: trainer, worker thread, runs, statistics, feedback, device, export."""
