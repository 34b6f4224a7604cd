"""The event stream, shared by the gateway (producer) and the stream worker (consumer).

`streams.base` is the seam (`EventStream`); `open_stream(settings)` picks the implementation.
It imports nothing from jobs/, models/ or serving/.
"""
