"""Multi-process, multi-instance tests against real Redis and PostgreSQL."""
