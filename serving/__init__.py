"""Serving stage: onnxruntime inference behind gRPC. Never imports TensorFlow."""

import os

# gRPC's fork handlers break a subprocess started while a channel or server is open (grpcio >= 1.81:
# the forked child's poller hits EBADF on the epoll fd that subprocess closes before exec, and the
# child dies: grpc/grpc#43055). `play --video` starts ffmpeg that way. Nothing here forks to use gRPC
# in the child, so the handlers are off unless the environment asks for them. Read at gRPC's init.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

# gRPC core writes a line to stderr for each failed TLS handshake (INFO, with no peer and no throttle): on an
# open network anyone can fill the log that way. Only core's errors are written unless the environment asks
# for more (GRPC_VERBOSITY=INFO). Read at gRPC's init.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
