"""Observability: the event bus, Prometheus metrics, webhooks."""
