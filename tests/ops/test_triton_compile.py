"""Every Triton kernel compiles for a real GPU target, on a machine without a GPU.

The interpreter (``TRITON_INTERPRET=1``, the rest of tests/ops) runs a kernel's Python; it does not
type-check it the way the compiler does. The first H200 run found a kernel the interpreter passed
and the compiler refused. Triton compiles ahead of time for a named target with the ptxas it
ships, no driver needed: here, for Hopper (sm_90, the H200) and Ampere (sm_80), with the argument
types the wrappers launch with. Compiling needs a process where ``TRITON_INTERPRET`` is unset
(tests/ops/conftest.py sets it before triton loads), so the test runs this file as a script.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# kernel -> (argument types: pointers "*dtype", scalars "i32"/"fp32"; constexpr values). Index
# tensors are int64 (BEVPoolGeometry, the voxel keys); depth and features are float32, or float16
# under autocast.
BEV = {"BLOCK_P": 16, "BLOCK_C": 64}
NMS = {"USE_LABELS": True, "BI": 16, "BJ": 16}


def _kernels() -> list[tuple[str, str, dict, dict]]:
    jobs = [
        ("voxelize", "_hash_insert_kernel",
         {"points_ptr": "*fp32", "n": "i32", "C": "i32", "lo_x": "fp32", "lo_y": "fp32",
          "lo_z": "fp32", "vs_x": "fp32", "vs_y": "fp32", "vs_z": "fp32", "gx": "i32",
          "gy": "i32", "gz": "i32", "keys_ptr": "*i64", "coords_ptr": "*i64",
          "table_keys_ptr": "*i64", "table_first_ptr": "*i64", "table_count_ptr": "*i64",
          "point_slot_ptr": "*i64", "table_mask": "i32"}, {"BLOCK": 256}),
        ("voxelize", "_scatter_voxels_kernel",
         {"points_ptr": "*fp32", "perm_ptr": "*i64", "sv_ptr": "*i32", "starts_ptr": "*i64",
          "out_ptr": "*fp32", "n": "i32", "m": "i32", "P": "i32"},
         {"C": 5, "CP": 8, "BLOCK": 256}),
    ]
    jobs.append(("voxelize", "_scatter_rows_kernel",
                 {"points_ptr": "*fp32", "src_ptr": "*i64", "dst_ptr": "*i64",
                  "out_ptr": "*fp32", "k": "i32"},
                 {"C": 5, "CP": 8, "BLOCK": 256}))
    for f in ("fp32", "fp16"):
        jobs += [
            ("bev_pool", "_fwd_kernel",
             {"depth_ptr": f"*{f}", "feats_ptr": f"*{f}", "depth_idx_ptr": "*i64",
              "feat_idx_ptr": "*i64", "intervals_ptr": "*i64", "out_ptr": "*fp32", "C": "i32",
              "HW": "i32"}, BEV),
            ("bev_pool", "_grad_depth_kernel",
             {"grad_ptr": "*fp32", "feats_ptr": f"*{f}", "depth_idx_ptr": "*i64",
              "feat_idx_ptr": "*i64", "cell_ptr": "*i64", "gdepth_ptr": "*fp32", "K": "i32",
              "C": "i32", "HW": "i32"}, BEV),
            ("bev_pool", "_grad_feats_kernel",
             {"grad_ptr": "*fp32", "depth_ptr": f"*{f}", "depth_idx_ptr": "*i64",
              "cell_ptr": "*i64", "feat_order_ptr": "*i64", "feat_ptr_ptr": "*i64",
              "gfeats_ptr": "*fp32", "C": "i32", "HW": "i32"}, BEV),
        ]
    for labels in (True, False):
        flags = dict(NMS, USE_LABELS=labels)
        jobs += [
            ("nms", "_rotated_mask_kernel",
             {"p_ptr": "*fp32", "lab_ptr": "*i32", "mask_ptr": "*i8", "n": "i32", "thr": "fp32",
              "snap": "fp32", "eps": "fp32"}, flags),
            ("nms", "_circle_mask_kernel",
             {"xy_ptr": "*fp32", "r_ptr": "*fp32", "lab_ptr": "*i32", "mask_ptr": "*i8",
              "n": "i32"}, flags),
        ]
    jobs.append(("nms", "_greedy_kernel", {"mask_ptr": "*i8", "keep_ptr": "*i8", "valid_ptr": "*i8",
                                           "last_ptr": "*i32", "n": "i32"},
                 {"NP2": 1024}))
    return jobs


def compile_all(archs=(90, 80)) -> list[str]:
    """Compile every kernel of ``_kernels`` for each CUDA arch; returns the failures."""
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    failures, seen = [], set()
    for op, name, types, consts in _kernels():
        fn = getattr(importlib.import_module(f"perception.ops.{op}.triton"), name)
        seen.add((op, name))
        params = [p.name for p in fn.params]
        missing = [p for p in params if p not in types and p not in consts]
        if missing or (set(types) | set(consts)) - set(params):
            failures.append(f"{op}.{name}: the table is out of date (parameters {params})")
            continue
        signature = {p: types.get(p, "constexpr") for p in params}
        constexprs = {(params.index(k),): v for k, v in consts.items()}
        for arch in archs:
            try:
                triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                               target=GPUTarget("cuda", arch, 32))
            except Exception as e:  # noqa: BLE001 - every failure is reported
                failures.append(f"{op}.{name} sm_{arch} {consts}: {type(e).__name__}: {e}")
    for op in ("voxelize", "bev_pool", "nms"):
        module = importlib.import_module(f"perception.ops.{op}.triton")
        for name, obj in vars(module).items():
            if isinstance(obj, triton.runtime.jit.JITFunction) and name.endswith("_kernel") \
                    and (op, name) not in seen:
                failures.append(f"{op}.{name}: a kernel this test does not compile; add it")
    return failures


def test_every_kernel_compiles_for_hopper_and_ampere():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, __file__], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "compiled" in done.stdout


if __name__ == "__main__":
    problems = compile_all()
    for p in problems:
        print(p)
    if problems:
        raise SystemExit(1)
    print(f"compiled {len(_kernels())} kernel variants for sm_90 and sm_80")
