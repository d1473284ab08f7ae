"""Triton kernels under the interpreter on CPU-only machines.

Triton reads TRITON_INTERPRET when it is first imported (its own library functions such as
``tl.sum`` are ``@triton.jit`` objects built then) and when each kernel is decorated, so the
variable must be set before anything imports triton; it cannot be scoped to one test. It is set
here only where no CUDA GPU exists, which is exactly where a compiled kernel could not run anyway,
so no test that would otherwise pass can change behaviour. With a GPU the interpreter tests are
skipped and the ``cuda`` tests run the compiled kernels instead.
"""
import importlib
import os
import sys

import pytest
import torch

_CPU_ONLY = not torch.cuda.is_available()
if _CPU_ONLY and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def interpreted():
    """interpreted("perception.ops.nms") -> that package's triton module, kernels interpreted."""
    if not _CPU_ONLY:
        pytest.skip("a GPU is present: the cuda tests run the compiled kernels")
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("triton was imported before TRITON_INTERPRET could be set")
    return lambda package: importlib.import_module(package + ".triton")
