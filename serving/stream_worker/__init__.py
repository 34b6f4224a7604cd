"""The stream worker process (`towerflow stream-worker`): events from the stream into online
features (within a second) and into the lake (each once).

- `worker`: the micro-batch loop and its metrics.
- `online`: recent actions and counters through Feast's push sources.
- `sink`: `bronze/events`, merged on event id.

It imports nothing from serving.gateway or serving.model_server.
"""
