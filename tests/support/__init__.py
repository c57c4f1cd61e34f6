"""Test support shared by every test folder, in one place.

- `tools`: fail (never skip) a test whose tools are missing, naming the fix;
- `exports`: models exported through the real export path (untrained);
- `live`: a real TorchServe for tests (`serving.server` plus pytest's failure
  and small HTTP helpers), `ServedModel`, the load/reliability server;
- `curl`: run a documented block of curl commands against a test server.

The session fixtures built on these are in `tests/conftest.py` (`load_server`)
and `tests/integration/conftest.py` (`torchserve`).
"""
