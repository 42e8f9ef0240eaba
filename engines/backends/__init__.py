"""Inference backends as plugins, and the automatic choice between them.

Each backend module (``onnxruntime``, ``torch``, ``tensorrt``) defines a :class:`Backend` subclass that declares
the Python packages it needs, the devices it can run on, and ``is_available(device)``;
:func:`choose_backend` tries them in priority order for the resolved device and records why each was taken or
skipped (:class:`BackendChoice`, which goes into every output's provenance). The base class lives in
:mod:`engines.backends.base`, the registry and the choice in :mod:`engines.backends.registry`.
"""

from __future__ import annotations

from engines.backends.base import Backend, BackendChoice
from engines.backends.registry import (
    available_backends,
    backend_class,
    choose_backend,
    create_backend,
    register_backend,
)

__all__ = [
    "Backend",
    "BackendChoice",
    "available_backends",
    "backend_class",
    "choose_backend",
    "create_backend",
    "register_backend",
]
