"""Sparse 3D backbone (spconv) and the height collapse to BEV.

spconv's algorithm is picked at forward time, not in the constructor (which never knows the
device): ``Native`` is the only one that runs on CPU tensors, ``MaskImplicitGemm`` is the fast
one on CUDA. spconv 2.3 stores every algorithm's weights in the same KRSC layout
(``spconv.constants.ALL_WEIGHT_IS_KRSC``), so switching does not touch parameters or checkpoints.

Two implementations of the same API (:func:`spconv_backend`): spconv 2.x (``spconv-cu120``: CPU
and its CUDA build) and spconv-triton (pure Triton, CUDA only; no compiled wheel to match, so it
runs wherever torch + triton run on a GPU). Both build the same parameters under the same names
and shapes, so a checkpoint trained with one loads into the other. spconv is used when it
imports; ``PERCEPTION_SPCONV=spconv|spconv_triton`` forces one.

spconv-triton autotunes each kernel over its whole candidate list (37 tile configurations for the
gather-GEMM) at every new layer shape, compiling each candidate: on the H200 one small test
backbone's first forward took over two minutes. :func:`limit_spconv_triton_autotuning` keeps
each kernel's first ``PERCEPTION_SPCONV_TRITON_CONFIGS`` candidates (default 4; 0 keeps the
library's full list, whose choice Triton then caches on disk). The candidates differ in speed
only, never in results.
"""
from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from perception.models.layers import ConvBNReLU


SPCONV_BACKENDS = ("spconv", "spconv_triton")


def spconv_backend() -> str:
    """The sparse-convolution package the LiDAR backbone uses: ``PERCEPTION_SPCONV`` if set,
    else "spconv" when it imports, else "spconv_triton" when it imports (ImportError if neither:
    the message says what to install)."""
    import importlib.util
    import os

    forced = os.environ.get("PERCEPTION_SPCONV", "").strip()
    if forced:
        if forced not in SPCONV_BACKENDS:
            raise ValueError(f"PERCEPTION_SPCONV={forced!r}: choose one of {SPCONV_BACKENDS}")
        return forced
    for name in SPCONV_BACKENDS:
        if importlib.util.find_spec(name) is not None:
            return name
    raise ImportError("the LiDAR backbone needs spconv: pip install spconv-cu120 (CPU and CUDA), "
                      "or spconv-triton (CUDA only)")


SPCONV_TRITON_CONFIGS_DEFAULT = 4
_autotune_keep: int | None = None     # what limit_spconv_triton_autotuning last applied


def _autotune_keep_from_env() -> int:
    import os

    raw = os.environ.get("PERCEPTION_SPCONV_TRITON_CONFIGS", "").strip()
    try:
        keep = int(raw) if raw else SPCONV_TRITON_CONFIGS_DEFAULT
    except ValueError:
        raise ValueError(f"PERCEPTION_SPCONV_TRITON_CONFIGS={raw!r}: give a whole number "
                         "of candidates per kernel (0: all)") from None
    if keep < 0:
        raise ValueError(f"PERCEPTION_SPCONV_TRITON_CONFIGS={raw!r}: give 0 (all) or more")
    return keep


def limit_spconv_triton_autotuning(keep: int | None = None) -> int:
    """Keep the first ``keep`` autotuning candidates of every spconv-triton kernel (default:
    ``PERCEPTION_SPCONV_TRITON_CONFIGS``, else 4; 0 restores the full lists). Returns the number
    of kernels whose list is now shorter than the library's. Idempotent; applies to kernels not
    tuned yet in this process. :func:`spconv_module` calls it when the variable's value differs
    from what was last applied (so once per process, not on every forward)."""
    global _autotune_keep
    import importlib
    import pkgutil

    from triton.runtime.autotuner import Autotuner

    if keep is None:
        keep = _autotune_keep_from_env()
    if keep < 0:
        raise ValueError(f"keep={keep}: give 0 (all candidates) or more")
    impl = importlib.import_module("spconv_triton.pytorch._impl")
    limited = 0
    for info in pkgutil.iter_modules(impl.__path__):
        module = importlib.import_module(f"{impl.__name__}.{info.name}")
        for tuner in vars(module).values():
            if not isinstance(tuner, Autotuner):
                continue
            full = tuner.__dict__.setdefault("_perception_all_configs", list(tuner.configs))
            tuner.configs = full[:keep] if keep else list(full)
            limited += len(tuner.configs) < len(full)
    _autotune_keep = keep
    return limited


def spconv_module(backend: str | None = None):
    """``spconv.pytorch`` or ``spconv_triton.pytorch``: that of ``backend``, by default of
    :func:`spconv_backend`."""
    # Imported on first use, not at package import: camera/radar models (and `import
    # perception.models`) must work where spconv is not installed, e.g. the GPU machine.
    import warnings

    if (backend or spconv_backend()) == "spconv_triton":
        import spconv_triton.pytorch as spconv

        if _autotune_keep_from_env() != _autotune_keep:
            limit_spconv_triton_autotuning()
        return spconv
    # spconv 2.3 against torch 2.13 warns on every import and every dense(): deprecated
    # torch.cuda.amp decorators and list indexing inside spconv itself. Both are harmless here
    # and would bury a training log; silence exactly those messages, nothing else.
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.custom_(fwd|bwd).*",
                            category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"Using a non-tuple sequence for multidimensional",
                            category=UserWarning, module=r"spconv\..*")
    # Constructing spconv's SparseConvTensor (an fx-proxyable class) makes torch 2.13 log a
    # deprecation notice about its own is_fx_tracing() at the first forward of every process.
    # (addFilter ignores a filter that is already there: repeated calls add nothing.)
    logging.getLogger("torch.fx._symbolic_trace").addFilter(_FX_TRACING_NOTICE)
    import spconv.pytorch as spconv

    return spconv


class _DropLogPrefix(logging.Filter):
    """Drops the log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


_FX_TRACING_NOTICE = _DropLogPrefix("is_fx_tracing will return true")


def _subm(spconv, c_in: int, c_out: int, key: str):
    ConvAlgo = spconv.ConvAlgo
    return spconv.SparseSequential(
        spconv.SubMConv3d(c_in, c_out, 3, padding=1, bias=False, indice_key=key,
                          algo=ConvAlgo.Native),
        nn.BatchNorm1d(c_out), nn.ReLU(inplace=True))


def _down(spconv, c_in: int, c_out: int):
    ConvAlgo = spconv.ConvAlgo
    return spconv.SparseSequential(
        spconv.SparseConv3d(c_in, c_out, 3, stride=2, padding=1, bias=False,
                            algo=ConvAlgo.Native),
        nn.BatchNorm1d(c_out), nn.ReLU(inplace=True))


class SparseBackbone3D(nn.Module):
    """Submanifold stages separated by stride-2 sparse convs.

    Args:
        in_channels: voxel feature width.
        channels: per stage; stage 0 keeps the input resolution, each later stage starts with a
            stride-2 ``SparseConv3d`` (x, y and z halve).
        blocks_per_stage: submanifold conv layers per stage.
        algo: "auto" | "native" | "implicit_gemm".
    Forward: a ``SparseConvTensor`` of spatial shape (D, H, W) -> one of shape
    ~(D, H, W) / 2**(len(channels) - 1) with ``channels[-1]`` features.
    """

    def __init__(self, *, in_channels: int, channels: tuple[int, ...], blocks_per_stage: int = 2,
                 algo: str = "auto"):
        super().__init__()
        self.backend = spconv_backend()     # fixed for the model's life: its modules are of it
        spconv = spconv_module(self.backend)
        stages, c_in = [], in_channels
        for i, c in enumerate(channels):
            layers = [_down(spconv, c_in, c)] if i > 0 else []
            # Layers of one stage share an indice_key: the neighbour pairs are computed once.
            layers += [_subm(spconv, c_in if (i == 0 and j == 0) else c, c, f"subm{i}")
                       for j in range(blocks_per_stage)]
            stages.append(spconv.SparseSequential(*layers))
            c_in = c
        self.stages = nn.ModuleList(stages)
        self.algo = algo
        self.out_channels = channels[-1]
        self.downsample = 2 ** (len(channels) - 1)

    def _set_algo(self, device: torch.device) -> None:
        spconv = spconv_module(self.backend)
        ConvAlgo = spconv.ConvAlgo
        if self.algo == "auto":
            algo = ConvAlgo.MaskImplicitGemm if device.type == "cuda" else ConvAlgo.Native
        else:
            algo = {"native": ConvAlgo.Native, "implicit_gemm": ConvAlgo.MaskImplicitGemm}[self.algo]
        for m in self.modules():
            if isinstance(m, spconv.conv.SparseConvolution) and m.algo != algo:
                m.algo = algo

    def forward(self, x):
        """``spconv.SparseConvTensor`` in, ``SparseConvTensor`` out."""
        if x.features.device.type != "cuda" and self.backend == "spconv_triton":
            raise RuntimeError("spconv-triton runs on CUDA tensors only; on CPU the LiDAR "
                               "backbone needs spconv (pip install spconv-cu120)")
        self._set_algo(x.features.device)
        for stage in self.stages:
            x = stage(x)
        return x


class HeightCollapse(nn.Module):
    """Dense (B, C, D, H, W) -> (B, C * D, H, W) -> 1x1 conv -> 3x3 conv -> (B, out, H, W).

    Stacking z into channels (SECOND / CenterPoint) keeps where along the height a feature was,
    which a max over z would throw away. The 1x1 first: a 3x3 on the C * D stack costs 9x more
    and was the single most expensive layer of the CPU config (measured).
    """

    def __init__(self, *, in_channels: int, depth: int, out_channels: int):
        super().__init__()
        self.conv = nn.Sequential(ConvBNReLU(in_channels * depth, out_channels, kernel_size=1),
                                  ConvBNReLU(out_channels, out_channels))
        self.depth = depth
        self.out_channels = out_channels

    def forward(self, x) -> Tensor:
        dense = x.dense()  # (B, C, D, H, W)
        b, c, d, h, w = dense.shape
        if d != self.depth:
            raise ValueError(f"sparse output depth {d} != configured {self.depth}")
        return self.conv(dense.reshape(b, c * d, h, w))
