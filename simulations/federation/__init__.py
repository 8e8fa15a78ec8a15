"""Flower deployment engine on loopback: TLS material, SuperNode auth keys, launcher.

- :mod:`~simulations.federation.tls`: CA + SuperLink certificate (``cryptography``).
- :mod:`~simulations.federation.auth`: per-node EC keys (OpenSSH format) and
  ``flwr supernode register``.
- :mod:`~simulations.federation.launcher`: ``up``/``down``/``status`` of one
  SuperLink and N SuperNodes, recorded in ``DIR/federation.json``.
"""
