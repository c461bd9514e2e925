"""Jobs that train on the server: a stored dataset, epochs, a holdout, exactly once."""

from corteza.server.jobs.book import JobBook
from corteza.server.jobs.runner import JobError, JobRunner

__all__ = ["JobBook", "JobError", "JobRunner"]
