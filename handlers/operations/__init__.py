"""The operations: encode, decode, sample and score, one module each.

`base` defines what an operation is (parse -> run -> respond, on either wire);
each operation loads only the exported modules it needs, named by the export
contract (`handlers.manifest.FILES`): encode needs `encoder.pt`, decode and
sample `decoder.pt`, score both. A VAE encoder has two outputs (z_mean,
z_log_var), the other modules one.
"""

from __future__ import annotations

from handlers.operations.base import Operation, Outputs, Parsed
from handlers.operations.decode import Decode
from handlers.operations.encode import Encode
from handlers.operations.sample import Sample
from handlers.operations.score import Score

OPERATIONS: dict[str, type[Operation]] = {
    "encode": Encode,
    "decode": Decode,
    "sample": Sample,
    "score": Score,
}

__all__ = ["OPERATIONS", "Decode", "Encode", "Operation", "Outputs", "Parsed", "Sample", "Score"]
