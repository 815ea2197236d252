"""The checkpoint registry service: researchers pull signed checkpoints over mutual TLS.

service.py serves the consortium's checkpoint store (workdir/checkpoints) over
gRPC (protocol: fedehr/shared/registry/registry.proto); withdrawals.py keeps
the rounds an operator withdrew; cli.py is `fedehr registry start|publish|revoke`.
"""
