"""Export a trained S4M / S4M-tiny to ONNX, to run without PyTorch: ``s4m-export-onnx``.

``s4m-export-onnx MODEL_DIR OUT_DIR`` reads an ``s4m-export`` folder and writes

* ``separator.onnx``: the offline separation, ``(mixture [B, T], signal_frames) ->
  sources [B, T, C]`` with dynamic batch and time (:class:`SeparatorGraph`). The
  runner pads the mixture to whole blocks of ``2^(S-1)`` encoder frames and says how
  many frames hold the signal, so that no length in the graph is rounded; the S4
  layers evaluate their SSM by chunk scans (:class:`~speechbrain_s4m.lobes.s4.
  ScannedS4`) instead of FFTs;
* for a causal model, ``stream_step.onnx``: one step of :class:`~speechbrain_s4m.
  inference.streaming.StreamingSeparator` as a pure function, ``(window, signal_frames,
  state...) -> (sources, state...)``, where ``window`` holds the samples of ``F``
  encoder frames (``F S + K - S``, consecutive windows overlapping by ``K - S``), and
  the state tensors are the convolution caches, the S4 states and the decoder's
  overlap-add tail (:class:`StreamStep`, the stream's own forward pass traced at a
  fixed window, the S4 layers running their chunk recurrence);
* ``onnx_model.json``: sample rate, speakers, opset, and per graph its file, inputs,
  encoder geometry (and for the step its frames, hop, latency and state tensors'
  names and shapes) and parity figures.

Both graphs are the lobes' own forward passes, with the S4 operators of
:mod:`speechbrain_s4m.lobes.s4_recurrence` as constants, so they hold no complex tensor
and no FFT. :mod:`speechbrain_s4m.inference.onnx_runtime` runs them with numpy and onnxruntime
alone.

Before anything is written, the export runs a check signal through onnxruntime and
PyTorch (the offline forward for ``separator.onnx``, on a batch of two short excerpts
and on the whole signal; the stream chunk by chunk for ``stream_step.onnx``), and
refuses the graphs (exit 1, the largest difference named) when they differ by more
than ``1e-4`` of the peak or ``0.01`` dB SI-SNR. Files are written to a temporary
folder and moved into place, so nothing half-written stays behind.

Legend: ``B`` batch, ``T`` samples, ``L'`` frames padded to whole blocks, ``F`` frames per
step, ``S`` encoder stride, ``K`` encoder kernel, ``C`` speakers.

Authors
 * speechbrain-s4m contributors
"""

import copy
import os
import sys
from functools import partial
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from speechbrain_s4m.cli import command_parser, usage_error
from speechbrain_s4m.export.graph_folder import (
    FolderFormat,
    ParityCheck,
    Tracer,
    check_signal,
    offline_parity,
    refuse_to_replace,
    stream_parity,
    write_graphs,
)
from speechbrain_s4m.export.onnx_lowering import translation_table
from speechbrain_s4m.export.speechbrain_folder import load_for_export
from speechbrain_s4m.inference.model_folder import UnsupportedBackbone, require_model_folder, require_s4m
from speechbrain_s4m.inference.onnx_runtime import METADATA
from speechbrain_s4m.inference.streaming import StreamingSeparator, StreamStep
from speechbrain_s4m.lobes.encoder_masker_decoder import EncoderMaskerDecoder, first_layer
from speechbrain_s4m.lobes.s4 import ScannedS4
from speechbrain_s4m.lobes.s4_recurrence import MAX_CHUNK
from speechbrain_s4m.lobes.s4m import ResidualS4, S4MMaskNet

GRAPH_FILES = {"separator": "separator.onnx", "stream_step": "stream_step.onnx"}  # file of each graph
OPSET = 18
ONNX_FOLDER = FolderFormat(
    metadata_file=METADATA,
    header={"format": "speechbrain-s4m onnx 1"},
    graph_files=tuple(GRAPH_FILES.values()),
    staging_prefix=".onnx-export-",
)


def parity_check(graph_dir: str, streaming: StreamingSeparator, mix: np.ndarray) -> Dict[str, float]:
    """Stream ``mix`` through the exported graph against PyTorch's stream
    (:func:`~speechbrain_s4m.export.graph_folder.stream_parity`)."""
    from speechbrain_s4m.inference.onnx_runtime import OnnxStreamingSeparator

    return stream_parity(OnnxStreamingSeparator(graph_dir), streaming, mix)


# why another backbone is refused (speechbrain_s4m.inference.model_folder.require_s4m)
WHY_ONLY_S4M = (
    "The graph is S4M's, lowered to real arithmetic (its S4 layers as chunk scans, its operators as "
    "onnxruntime computes them exactly)."
)


# ------------------------------------------------------------------ the offline graph
def scanned_mask_net(masknet: S4MMaskNet) -> S4MMaskNet:
    """A copy of ``masknet`` whose S4 layers evaluate their SSM by chunk scans
    (:class:`~speechbrain_s4m.lobes.s4.ScannedS4`, real arithmetic, no FFT), the
    same function as the FFT layers; ``masknet`` itself is left as it is."""
    scanned = copy.deepcopy(masknet)
    for module in scanned.modules():
        if isinstance(module, ResidualS4):
            module.s4 = ScannedS4(module.s4)
    return scanned


class SeparatorGraph(nn.Module):
    """The offline separation of an S4M / S4M-tiny model as a graph of fixed operations
    for every batch and length, for tracing: ``mixture [B, T]`` and ``signal_frames``
    -> ``sources [B, T, C]``.

    The caller pads the mixture to whole blocks: ``T = (L' - 1) S + K`` samples for
    ``L'`` a multiple of the blocks' ``2^(S-1)`` frames, of which the first
    ``signal_frames`` hold the signal (the mask network treats the rest as padding,
    see :meth:`~speechbrain_s4m.lobes.S4MMaskNet.forward`); the caller then trims the
    sources to the signal's length. The lobes are the model's own, with the S4 layers
    scanned (:func:`scanned_mask_net`).

    Example
    -------
    >>> from speechbrain.lobes.models.dual_path import Decoder
    >>> from speechbrain_s4m.lobes import S4MMaskNet, WaveformEncoder
    >>> model = EncoderMaskerDecoder(WaveformEncoder(32), S4MMaskNet(17, hidden_channels=16,
    ...     num_blocks=1), Decoder(17, 1, 32, stride=8, bias=False)).eval()
    >>> graph = SeparatorGraph(model)
    >>> mix = torch.randn(1, 1000)  # 122 frames, padded to 128
    >>> padded = torch.cat([mix, torch.zeros(1, 127 * 8 + 32 - 1000)], -1)
    >>> with torch.no_grad():
    ...     sources = graph(padded, torch.tensor(122))[:, :1000]
    ...     expected = model(mix)
    >>> sources.shape, bool(torch.allclose(sources, expected, atol=1e-5))
    (torch.Size([1, 1000, 2]), True)
    """

    def __init__(self, model: EncoderMaskerDecoder):
        super().__init__()
        require_s4m(model.masknet, "s4m-export-onnx", WHY_ONLY_S4M)
        self.model = EncoderMaskerDecoder(model.encoder, scanned_mask_net(model.masknet), model.decoder).eval()
        convolution = first_layer(model.encoder, nn.Conv1d, "SeparatorGraph: encoder")
        self.kernel, self.stride = int(convolution.kernel_size[0]), int(convolution.stride[0])
        self.block_frames = int(model.masknet.block_frames)

    @property
    def max_frames(self) -> int:
        """The longest signal, in encoder frames, that the S4 scans cover: each scan's
        length at its scale (the global S4 runs at the coarsest, ``2^(S-1)`` times
        shorter; S4M's decoder S4 layer ``i`` at scale ``i``)."""
        block = self.model.masknet.block
        limits = [block.global_s4.s4.max_frames * block.frame_multiple]
        limits += [residual.s4.max_frames << i for i, residual in enumerate(block.decoder_s4 or [])]
        return min(limits)

    def forward(self, mixture: torch.Tensor, signal_frames: torch.Tensor) -> torch.Tensor:
        """``mixture [B, (L' - 1) S + K]``, ``signal_frames`` -> ``[B, (L' - 1) S + K, C]``."""
        return self.model.separate_frames(mixture, signal_frames=signal_frames)


def trace_separator(model: EncoderMaskerDecoder, directory: str) -> Dict[str, object]:
    """Write ``directory/separator.onnx``, with dynamic batch and time, and return its
    section of ``onnx_model.json``.

    The time axis is traced as ``(P blocks - 1) S + K`` samples, a whole number of
    blocks, so that no length in the graph is rounded; the example spans several
    scan chunks at the coarsest scale, so that no chunk count is fixed to 1.
    """
    graph = SeparatorGraph(model).eval()
    P, S, K = graph.block_frames, graph.stride, graph.kernel
    blocks = torch.export.Dim("blocks", min=1, max=graph.max_frames // P)
    time = P * S * blocks + K - S
    example_frames = (2 * MAX_CHUNK + 3) * P
    example = (torch.zeros(2, (example_frames - 1) * S + K), torch.tensor(example_frames - 3))
    with torch.no_grad(), size_oblivious_tracing():
        export_program(
            graph,
            example,
            os.path.join(directory, GRAPH_FILES["separator"]),
            input_names=["mixture", "signal_frames"],
            output_names=["sources"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1), 1: time}, None),
        )
    return {
        "file": GRAPH_FILES["separator"],
        "inputs": ["mixture", "signal_frames"],
        "outputs": ["sources"],
        "encoder_kernel": K,
        "encoder_stride": S,
        "block_frames": P,
        "max_frames": graph.max_frames,
    }


def export_program(module: nn.Module, inputs: Tuple[object, ...], path: str, **options) -> None:
    """Export ``module`` on ``inputs`` to the ONNX file ``path`` as every graph of this
    project is exported: torch.onnx's dynamo exporter at :data:`OPSET`, with the
    lowerings of :mod:`speechbrain_s4m.export.onnx_lowering` (group norms as exact as
    PyTorch's, the lobes' own operators), and without torch.onnx's optimisation pass
    (onnxruntime optimises the graph itself, and the pass is slow to export).
    ``options`` go to ``torch.onnx.export`` (names, dynamic shapes)."""
    program = torch.onnx.export(
        module,
        inputs,
        dynamo=True,
        opset_version=OPSET,
        optimize=False,
        custom_translation_table=translation_table(),
        **options,
    )
    program.save(path, external_data=False)


def size_oblivious_tracing():
    """A context in which torch.export treats every dynamic size as a general one,
    rather than specialising the graph to sizes 0 and 1 (a scan over one chunk, a
    batch of one) where its code would branch on them."""
    import torch.fx.experimental._config as fx_config

    return fx_config.patch(backed_size_oblivious=True)


def separator_parity(directory: str, model: EncoderMaskerDecoder, mix: np.ndarray) -> Dict[str, float]:
    """The exported separator through onnxruntime against PyTorch's offline forward
    (:func:`~speechbrain_s4m.export.graph_folder.offline_parity`)."""
    from speechbrain_s4m.inference.onnx_runtime import OnnxSeparator

    return offline_parity(OnnxSeparator(directory), model, mix)


# ------------------------------------------------------------------ writing the graphs
def export_stream_step(
    streaming: StreamingSeparator, out_dir: str, chunk_ms: float = 16.0, check_mix: Optional[np.ndarray] = None
) -> Dict[str, float]:
    """The stream step alone: ``out_dir/stream_step.onnx`` with ``onnx_model.json``,
    checked against PyTorch (as in :func:`export_graphs`); returns the parity figures."""
    sample_rate = _sample_rate(streaming.sample_rate)
    mix = check_signal(sample_rate) if check_mix is None else check_mix
    graphs = {"stream_step": _stream_step_graph(streaming, chunk_ms, mix)}
    return write_onnx(out_dir, sample_rate, streaming.num_spks, graphs)["stream_step"]


def export_graphs(
    model: EncoderMaskerDecoder,
    sample_rate: int,
    out_dir: str,
    chunk_ms: float = 16.0,
    check_mix: Optional[np.ndarray] = None,
) -> Dict[str, Dict[str, float]]:
    """``separator.onnx`` for an S4M / S4M-tiny model, and ``stream_step.onnx`` as well
    for a causal one, with ``onnx_model.json``, each checked against PyTorch on
    ``check_mix`` (default :func:`check_signal`) before anything is written to
    ``out_dir``. Returns the parity figures by graph.

    Raises
    ------
    ValueError
        When a parity check fails (``out_dir`` is left as it was), or the mask network
        is not an S4MMaskNet.
    """
    require_s4m(model.masknet, "s4m-export-onnx", WHY_ONLY_S4M)
    model = model.eval()
    mix = check_signal(sample_rate) if check_mix is None else np.asarray(check_mix, dtype=np.float32)
    graphs = {
        "separator": (partial(trace_separator, model), partial(separator_parity, model=model, mix=mix)),
    }
    if getattr(model.masknet, "causal", False):
        streaming = StreamingSeparator(model.encoder, model.masknet, model.decoder, sample_rate)
        graphs["stream_step"] = _stream_step_graph(streaming, chunk_ms, mix)
    return write_onnx(out_dir, sample_rate, int(model.masknet.num_spks), graphs)


def write_onnx(
    out_dir: str, sample_rate: int, num_spks: int, graphs: Dict[str, Tuple[Tracer, ParityCheck]]
) -> Dict[str, Dict[str, float]]:
    """:func:`~speechbrain_s4m.export.graph_folder.write_graphs` into an ONNX folder."""
    metadata = {"sample_rate": sample_rate, "num_spks": num_spks, "opset": OPSET}
    return write_graphs(out_dir, ONNX_FOLDER, metadata, graphs)


def _sample_rate(sample_rate: Optional[int]) -> int:
    if sample_rate is None:
        raise ValueError("s4m-export-onnx: the StreamingSeparator needs its sample_rate")
    return int(sample_rate)


def _stream_step_graph(streaming: StreamingSeparator, chunk_ms: float, mix: np.ndarray) -> Tuple[Tracer, ParityCheck]:
    _sample_rate(streaming.sample_rate)  # the export's own error when it is missing
    blocks = streaming.step_blocks(chunk_ms)
    mix = np.asarray(mix, dtype=np.float32)
    return partial(trace_stream_step, streaming, blocks), partial(parity_check, streaming=streaming, mix=mix)


def trace_stream_step(streaming: StreamingSeparator, blocks: int, directory: str) -> Dict[str, object]:
    """Write ``directory/stream_step.onnx`` (:class:`StreamStep` over ``blocks`` blocks)
    and return its section of ``onnx_model.json``."""
    step = StreamStep(streaming, blocks).eval()
    inputs = (torch.zeros(step.window_samples), torch.tensor(step.frames), *step.initial_state())
    input_names = ["window", "signal_frames"] + [f"state.{n}" for n in step.state_names]
    output_names = ["sources"] + [f"next.{n}" for n in step.state_names]
    with torch.no_grad():
        export_program(
            step,
            inputs,
            os.path.join(directory, GRAPH_FILES["stream_step"]),
            input_names=input_names,
            output_names=output_names,
        )
    return {
        "file": GRAPH_FILES["stream_step"],
        "frames": step.frames,
        "hop_samples": step.hop_samples,
        "window_samples": step.window_samples,
        "encoder_kernel": streaming.kernel,
        "encoder_stride": streaming.stride,
        # a step waits for its whole window: (F - 1) S + K - 1 (the PyTorch stream's, at F = 2^(S-1))
        "latency_samples": step.window_samples - 1,
        "inputs": ["window", "signal_frames"],
        "state": [
            {"name": f"state.{name}", "shape": list(shape)} for name, shape in zip(step.state_names, step.state_shapes)
        ],
    }


def export_onnx(
    model_dir: str, out_dir: str, chunk_ms: float = 16.0, force: bool = False, check_audio: Optional[str] = None
) -> Dict[str, Dict[str, float]]:
    """``s4m-export-onnx``: the ONNX graphs of an ``s4m-export`` folder, checked
    against PyTorch. Returns the parity figures by graph."""
    require_model_folder(model_dir)
    refuse_to_replace(out_dir, ONNX_FOLDER, force)
    model, sample_rate, check_mix = load_for_export(model_dir, check_audio)
    return export_graphs(model, sample_rate, out_dir, chunk_ms, check_mix)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``s4m-export-onnx``; returns the exit status."""
    parser = command_parser(
        prog="s4m-export-onnx",
        description=(
            "Export an s4m-export folder of an S4M or S4M-tiny model to ONNX: separator.onnx (offline, any "
            "batch and length), for a causal model (hparams/*_causal.yaml) also stream_step.onnx, and "
            "onnx_model.json; every graph is checked against PyTorch before anything is written."
        ),
    )
    parser.add_argument("model_dir", help="an s4m-export model folder")
    parser.add_argument("out_dir", help="the folder to write the graphs to")
    parser.add_argument(
        "--chunk-ms", type=float, default=16.0, help="causal models: audio per stream step, in ms (default 16)"
    )
    parser.add_argument("--check-audio", help="a mixture file for the parity check (default: a synthetic 7.3 s)")
    parser.add_argument("--force", action="store_true", help="replace existing graphs in OUT_DIR")
    args = parser.parse_args(argv)
    try:
        figures = export_onnx(args.model_dir, args.out_dir, args.chunk_ms, args.force, args.check_audio)
    except (FileNotFoundError, FileExistsError) as error:
        return usage_error("s4m-export-onnx", error)
    except UnsupportedBackbone as error:
        return usage_error("s4m-export-onnx", error)
    except ValueError as error:
        print(f"s4m-export-onnx: error: {error}", file=sys.stderr)
        return 1
    for graph, parity in figures.items():
        print(
            f"Exported {args.model_dir} to {args.out_dir}: {graph}.onnx matches PyTorch within "
            f"{parity['max_difference_over_peak']:.2g} of the peak (SI-SNR against PyTorch "
            f"{parity['min_si_snr_db']:.1f} dB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
