"""The HTTP API (`metrics-pipeline api`, SPEC §10): applications push measures and events with a key.

FastAPI on uvicorn. This package is the HTTP layer only: keys are `lib.api_keys`, validation and
the durable landing writer `lib.custom`. It imports neither Dagster nor the development harness.
"""
