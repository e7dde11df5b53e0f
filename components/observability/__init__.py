"""Observability of the stack: metrics collection, alerts and dashboards."""
