"""Run TorchServe locally: `python -m serving.cli start|stop|status` (make serve / make stop)."""
