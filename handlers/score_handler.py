"""TorchServe entry point of the `<model>-score` archives.

TorchServe's loader wants exactly one class defined in the handler module, so
each operation has this one-line file; the logic is in `handlers.ts_adapter`.
"""

from handlers.ts_adapter import LatentHandler


class ScoreHandler(LatentHandler):
    operation = "score"
