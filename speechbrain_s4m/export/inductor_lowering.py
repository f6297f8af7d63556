"""The lowering of ``s4m-compile``: TorchInductor compiles a lobe's forward pass ahead of
time into a package, with the lobes' operators decomposed so that it fuses them.

A stream step of full-size causal S4M-tiny runs 16 unfolded passes on a few frames
each, so eager PyTorch spends it on calling operators (15,200 operator calls per 16 ms
chunk), not on arithmetic; offline, most of its time is operator overhead and memory
traffic over 512-channel maps. :func:`compile_package` exports a module
(:class:`~speechbrain_s4m.inference.streaming.StreamStep`, or the offline
:class:`~speechbrain_s4m.export.onnx_graphs.SeparatorGraph`: the functions the ONNX export
traces) with ``torch.export`` and compiles it with AOTInductor, which fuses the
elementwise operators into a few C++ loops per pass and leaves the matrix products to
oneDNN. Some of the lobes' operators would stay opaque calls there, or be lowered slowly
for these shapes, so the package decomposes them into their formulas (the first two as
:mod:`speechbrain_s4m.export.onnx_lowering` lowers them to ONNX):

* ``speechbrain_s4m::pairwise_mean`` into :func:`~speechbrain_s4m.lobes.s4m.mean_of_pairs`;
* ``speechbrain_s4m::broadcast_gate`` into :func:`~speechbrain_s4m.lobes.s4m.gated_repetition`;
* a depthwise 1-D ``aten.convolution`` (``groups`` equal to the channels, one input
  channel per filter) into :func:`~speechbrain_s4m.lobes.depthwise.sum_of_taps`, ``K``
  shifted multiply-adds that fuse with the norm after them. oneDNN takes about 60 us per
  call on a stream step's few frames; every other convolution is left to Inductor;
* the ``aten.baddbmm`` of a :class:`~speechbrain_s4m.lobes.pointwise.PointwiseConv1d`
  on one signal into :func:`pointwise_product`, ``x^T W^T + b``: an ``addmm`` of a
  constant weight, which Inductor's freezing packs for oneDNN once, at compile time. On
  a few frames the BLAS is much slower with the weight on the left (``W x``) than with
  the frames as rows: 1 thread, 1024 x 512 weight, 2 frames, AMD EPYC (AVX2): about
  1000 us for ``baddbmm``, 140 us for the row product, 123 us packed;
* ``aten.native_layer_norm`` (the per-frame norms) into :func:`layer_norm_by_moments`,
  the mean and then the mean square about it, in place of the Welford reduction of
  Inductor's own lowering, which is slow over a strided axis of 512 channels.

Each decomposition is the operator's own formula (the tests compare them), so the lobes
keep one implementation. The package holds the weights as constants (Inductor's
freezing, which needs the compile to run without autograd and its flag set in
Inductor's global configuration), one copy of each however many passes use it
(:func:`shared_constants`). Compiling needs a C++ compiler and takes minutes for a
full-size model; loading the package needs neither.

Authors
 * speechbrain-s4m contributors
"""

import shutil
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from speechbrain_s4m.lobes.depthwise import sum_of_taps
from speechbrain_s4m.lobes.s4m import gated_repetition, mean_of_pairs

aten = torch.ops.aten


def shared_constants(graph: torch.fx.Graph) -> None:
    """One constant for each weight that every unfolded pass uses.

    Freezing folds what the graph computes from the weights alone (a transposed copy
    of a weight for a product, say) into constants, one per use: full-size S4M-tiny has
    16 unfolded passes, so each pass would read its own copy. Here equal constants
    (same shape, strides, dtype, device and values) become one. Applied as Inductor's
    ``post_grad_custom_pre_pass``, after freezing.

    Example
    -------
    >>> module = torch.nn.Module()
    >>> module.a, module.b, module.c = torch.ones(3), torch.ones(3), torch.zeros(3)
    >>> graph = torch.fx.Graph(module)
    >>> total = graph.call_function(torch.add, (graph.get_attr("a"), graph.get_attr("b")))
    >>> _ = graph.output(graph.call_function(torch.add, (total, graph.get_attr("c"))))
    >>> shared_constants(graph)
    >>> [node.target for node in graph.nodes if node.op == "get_attr"]
    ['a', 'c']
    """
    module = graph.owning_module
    kept: Dict[tuple, List[torch.fx.Node]] = {}
    for node in list(graph.find_nodes(op="get_attr")):
        value = getattr(module, node.target, None)
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            continue  # an opaque buffer has no values to compare
        same = kept.setdefault((tuple(value.shape), value.stride(), value.dtype, value.device), [])
        twin = next((n for n in same if torch.equal(getattr(module, n.target), value)), None)
        if twin is None:
            same.append(node)
        else:
            node.replace_all_uses_with(twin)
            graph.erase_node(node)


INDUCTOR_CONFIG = {
    "freezing": True,
    "fx_graph_cache": False,
    "post_grad_custom_pre_pass": shared_constants,
}


def depthwise_convolution(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    transposed: bool,
    output_padding: Sequence[int],
    groups: int,
):
    """``aten.convolution`` of a depthwise 1-D convolution as :func:`sum_of_taps`;
    ``NotImplemented`` (Inductor's own lowering) for any other convolution.

    Example
    -------
    >>> x, w = torch.randn(1, 4, 12), torch.randn(4, 1, 5)
    >>> y = depthwise_convolution(x, w, None, [1], [2], [1], False, [0], 4)
    >>> bool(torch.allclose(y, torch.nn.functional.conv1d(x, w, padding=2, groups=4), atol=1e-6))
    True
    >>> depthwise_convolution(x, torch.randn(4, 4, 3), None, [1], [0], [1], False, [0], 1)
    NotImplemented
    """
    channels = input.shape[1] if input.dim() == 3 else -1
    depthwise = groups == channels and weight.shape[0] == channels and weight.shape[1] == 1
    if transposed or input.dim() != 3 or not depthwise or tuple(dilation) != (1,):
        return NotImplemented
    return sum_of_taps(input, weight, bias, stride[0], padding[0])


def pointwise_product(bias: torch.Tensor, weight: torch.Tensor, x: torch.Tensor, *, beta: float = 1, alpha: float = 1):
    """``aten.baddbmm`` of one :class:`~speechbrain_s4m.lobes.pointwise.PointwiseConv1d`
    on one signal (``bias`` ``[1, C_out, 1]``, ``weight`` ``[1, C_out, C_in]``, ``x``
    ``[1, C_in, L]``) as the product of the frames' rows with the transposed weight,
    ``x^T W^T + b``; ``NotImplemented`` for any other ``baddbmm``.

    Example
    -------
    >>> b, w, x = torch.randn(1, 6, 1), torch.randn(1, 6, 4), torch.randn(1, 4, 3)
    >>> bool(torch.allclose(pointwise_product(b, w, x), torch.baddbmm(b, w, x), atol=1e-6))
    True
    """
    out_channels = weight.shape[1]
    if weight.shape[0] != 1 or x.shape[0] != 1 or tuple(bias.shape) != (1, out_channels, 1) or (beta, alpha) != (1, 1):
        return NotImplemented
    rows = x[0].T.contiguous()  # [L, C_in]
    return torch.addmm(bias.view(out_channels), rows, weight[0].T).T[None]  # [1, C_out, L]


def layer_norm_by_moments(
    input: torch.Tensor,
    normalized_shape: Sequence[int],
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    eps: float,
):
    """``aten.native_layer_norm`` as its two moments, the mean and then the mean square
    about it, in place of the single-pass Welford update that Inductor's own lowering
    generates: the per-frame norms of a stream step reduce over the channels, a strided
    axis, with vectors of 2 to 16 frames, where Welford's dependent update per channel is
    the slow part. Returns ``(normalised, mean, 1 / std)`` as the operator does.

    Example
    -------
    >>> x, w, b = torch.randn(2, 5, 8), torch.randn(8), torch.randn(8)
    >>> y, mean, rstd = layer_norm_by_moments(x, [8], w, b, 1e-5)
    >>> bool(torch.allclose(y, torch.nn.functional.layer_norm(x, [8], w, b, 1e-5), atol=1e-5)), mean.shape
    (True, torch.Size([2, 5, 1]))
    """
    dims = list(range(input.dim() - len(normalized_shape), input.dim()))
    mean = input.mean(dims, keepdim=True)
    centered = input - mean
    rstd = torch.rsqrt((centered * centered).mean(dims, keepdim=True) + eps)
    out = centered * rstd
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out, mean, rstd


def decompositions() -> Dict[object, Callable]:
    """Inductor's decomposition table with the lobes' operators added."""
    from torch._inductor.decomposition import select_decomp_table

    ops = torch.ops.speechbrain_s4m  # registered by importing speechbrain_s4m.lobes.s4m
    return {
        **select_decomp_table(),
        ops.pairwise_mean.default: mean_of_pairs,
        ops.broadcast_gate.default: gated_repetition,
        aten.convolution.default: depthwise_convolution,
        aten.baddbmm.default: pointwise_product,
        aten.native_layer_norm.default: layer_norm_by_moments,
    }


def require_compiler() -> None:
    """``RuntimeError`` when no C++ compiler is on the PATH (Inductor needs one)."""
    if not any(shutil.which(name) for name in ("g++", "c++", "clang++")):
        raise RuntimeError(
            "compiling (s4m-compile, s4m-separate --compile) needs a C++ compiler (g++ or clang++) on the "
            "PATH; install one (apt install g++), or separate without compiling"
        )


def compile_package(
    module: nn.Module,
    inputs: Tuple[torch.Tensor, ...],
    package_path: str,
    dynamic_shapes: Optional[Tuple[object, ...]] = None,
) -> str:
    """Compile ``module`` ahead of time on ``inputs`` into the AOTInductor package
    ``package_path`` (a ``.pt2`` file, loaded by ``torch._inductor.aoti_load_package``
    with no compiler and no Python graph): exported by ``torch.export`` (every dynamic
    size size-oblivious, as the ONNX export traces), decomposed with
    :func:`decompositions`, the weights frozen into the package, and compiled with the
    C++ compiler. The kernels use the torch threads of the time of compiling
    (``torch.get_num_threads()``). Returns the package's path."""
    require_compiler()
    from torch.fx.experimental import _config as fx_config

    with torch.no_grad(), fx_config.patch(backed_size_oblivious=True):
        program = torch.export.export(module, inputs, dynamic_shapes=dynamic_shapes, strict=False)
        program = program.run_decompositions(decompositions())
    from torch._inductor import aoti_compile_and_package

    # Inductor freezes only what it compiles without autograd, and reads ``freezing`` from
    # its global configuration (given as the package's ``inductor_configs`` it is
    # ignored): otherwise every weight stays a plain constant, and each matrix product
    # repacks its weight at every call
    with torch.no_grad(), torch._inductor.config.patch(INDUCTOR_CONFIG):
        return aoti_compile_and_package(program, package_path=package_path)
