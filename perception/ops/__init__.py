"""Hot-path operators: voxelization, camera BEV pooling, BEV NMS.

Each op has a pure-torch reference (the truth, and a CPU path), a Triton kernel for CUDA
(imported lazily, so ``import perception.ops`` needs neither a GPU nor a compiler) and one public
function that dispatches on the device, with ``backend=`` to force a path.
"""
from .bev_pool import BEVPoolGeometry, bev_pool, cached_geometry
from .nms import circle_nms, nms_bev
from .voxelize import voxelize, voxelize_dynamic

__all__ = ["voxelize", "voxelize_dynamic", "bev_pool", "BEVPoolGeometry", "cached_geometry",
           "nms_bev", "circle_nms"]
