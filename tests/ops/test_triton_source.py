"""What the interpreter lets pass but the compiler refuses, checked without a GPU.

Under ``TRITON_INTERPRET=1`` a kernel may read any module global; compiled for a GPU it may read
only globals that are ``tl.constexpr`` (or modules and other jitted functions), else compiling
fails with "Cannot access global variable". The first GPU run of the voxelize kernel failed so;
this test reads every kernel's source and names any such global."""
from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import types

import pytest

MODULES = ("perception.ops.voxelize.triton", "perception.ops.bev_pool.triton",
           "perception.ops.nms.triton")


def _is_jit(node: ast.FunctionDef) -> bool:
    for d in node.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if isinstance(target, ast.Attribute) and target.attr in ("jit", "autotune"):
            return True
    return False


def _local_names(fn: ast.FunctionDef) -> set[str]:
    names = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def _allowed(value) -> bool:
    import triton
    import triton.language as tl

    if isinstance(value, (types.ModuleType, tl.constexpr)):
        return True
    if isinstance(value, triton.runtime.jit.JITFunction):
        return True
    # Another kernel or jitted helper as the interpreter wraps it (InterpretedFunction).
    return callable(value) and type(value).__module__.startswith("triton.")


@pytest.mark.parametrize("name", MODULES)
def test_kernels_read_only_constexpr_globals(name):
    pytest.importorskip("triton")
    module = importlib.import_module(name)
    tree = ast.parse(inspect.getsource(module))
    kernels = [n for n in tree.body if isinstance(n, ast.FunctionDef) and _is_jit(n)]
    assert kernels, f"{name}: no @triton.jit function found"
    bad = []
    for fn in kernels:
        local = _local_names(fn)
        for node in ast.walk(fn):
            if not (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)):
                continue
            if node.id in local or hasattr(builtins, node.id):
                continue
            if node.id not in vars(module):
                bad.append(f"{fn.name}: {node.id} is not defined")
            elif not _allowed(vars(module)[node.id]):
                bad.append(f"{fn.name} (line {node.lineno}): global {node.id} = "
                           f"{vars(module)[node.id]!r} is not a tl.constexpr")
    assert not bad, f"{name}: " + "; ".join(bad)


def test_the_check_catches_a_plain_global(tmp_path, monkeypatch):
    pytest.importorskip("triton")
    src = ("import triton\nimport triton.language as tl\n_LIMIT = 3\n_OK = tl.constexpr(4)\n"
           "@triton.jit\ndef k(x_ptr):\n    tl.store(x_ptr, _LIMIT + _OK)\n")
    (tmp_path / "fake_kernels.py").write_text(src)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AssertionError, match=r"global _LIMIT = 3 is not a tl.constexpr"):
        test_kernels_read_only_constexpr_globals("fake_kernels")
