"""Training loops: fit over REST or the stream, the stream's channel, resumable batches."""
