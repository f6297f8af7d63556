"""Export a trained S4M / S4M-tiny to ONNX, to run without PyTorch: ``s4m-export-onnx``.

``s4m-export-onnx MODEL_DIR OUT_DIR`` reads an ``s4m-export`` folder and writes

* ``separator.onnx``: the offline separation, ``(mixture [B, T], signal_frames) ->
  sources [B, T, C]`` with dynamic batch and time (:class:`SeparatorGraph`). The
  runner pads the mixture to whole blocks of ``2^(S-1)`` encoder frames and says how
  many frames hold the signal, so that no length in the graph is rounded; the S4
  layers evaluate their SSM by chunk scans (:class:`~speechbrain_s4m.lobes.s4.
  ScannedS4`) instead of FFTs;
* for a causal model, ``stream_step.onnx``: one step of :class:`~speechbrain_s4m.
  streaming.StreamingSeparator` as a pure function, ``(window, signal_frames,
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
and no FFT. :mod:`speechbrain_s4m.onnx_runtime` runs them with numpy and onnxruntime
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
import json
import os
import shutil
import sys
import tempfile
from functools import partial
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from speechbrain_s4m.cli import command_parser, usage_error
from speechbrain_s4m.data.audio import read_audio
from speechbrain_s4m.export import load_exported
from speechbrain_s4m.lobes.s4 import ScannedS4
from speechbrain_s4m.lobes.s4_recurrence import MAX_CHUNK
from speechbrain_s4m.lobes.s4m import ResidualS4, S4MMaskNet
from speechbrain_s4m.metrics import si_snr
from speechbrain_s4m.onnx_lowering import translation_table
from speechbrain_s4m.onnx_runtime import METADATA
from speechbrain_s4m.separator import EncoderMaskerDecoder, first_layer
from speechbrain_s4m.streaming import StreamingSeparator, StreamStep

GRAPH_FILES = {"separator": "separator.onnx", "stream_step": "stream_step.onnx"}  # file of each graph
OPSET = 18
PEAK_TOLERANCE = 1e-4  # largest |onnx - torch| over the peak |torch|
# SI-SNR of the ONNX sources against PyTorch's: at 80 dB the difference e is below 1e-4
# of the signal, so a separation of up to 20 dB SI-SNR against any reference (a residual
# of at least 0.1 of the signal) moves by under 20 log10(1 + 1e-3) < 0.01 dB.
SI_SNR_FLOOR_DB = 80.0
CHECK_SECONDS = 7.3
SHORT_CHECK_SECONDS = 0.37  # the separator is also checked on a batch of two excerpts this long


def compare(onnx_out: np.ndarray, torch_out: np.ndarray) -> Dict[str, float]:
    """The parity figures of two separations ``[time, spks]``: the largest difference
    over the peak, and the lowest SI-SNR (dB) of an ONNX source with its PyTorch
    source as the reference."""
    if onnx_out.shape != torch_out.shape:
        raise ValueError(f"parity: ONNX output {onnx_out.shape} against PyTorch output {torch_out.shape}")
    peak = float(np.abs(torch_out).max()) or 1.0
    worst = float(si_snr(torch.from_numpy(onnx_out)[None], torch.from_numpy(torch_out)[None]).min())
    return {"max_difference_over_peak": float(np.abs(onnx_out - torch_out).max()) / peak, "min_si_snr_db": worst}


def check_signal(sample_rate: int, seconds: float = CHECK_SECONDS, seed: int = 0) -> np.ndarray:
    """A deterministic check mixture: two amplitude-modulated noise bands, float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    low = np.convolve(rng.standard_normal(t.size), np.ones(8) / 8, mode="same") * (1 + np.sin(2 * np.pi * 3 * t))
    high = np.diff(rng.standard_normal(t.size + 1)) * (1 + np.cos(2 * np.pi * 5 * t))
    return (0.3 * (low + high)).astype(np.float32)


def torch_stream(streaming: StreamingSeparator, mix: np.ndarray, chunk: int) -> np.ndarray:
    """``mix [time]`` through PyTorch's stream in chunks of ``chunk`` samples."""
    streaming.reset()
    parts = [streaming.process(mix[i : i + chunk]) for i in range(0, mix.shape[0], chunk)]
    return torch.cat(parts + [streaming.flush()]).numpy()


def parity_check(graph_dir: str, streaming: StreamingSeparator, mix: np.ndarray) -> Dict[str, float]:
    """Stream ``mix`` through the exported graph, a step at a time, and through
    PyTorch's stream in chunks of one second (a stream's output does not depend on
    its chunks); the figures of :func:`compare`."""
    from speechbrain_s4m.onnx_runtime import OnnxStreamingSeparator

    runner = OnnxStreamingSeparator(graph_dir)
    hop = runner.hop_samples
    onnx_parts = [runner.process(mix[i : i + hop]) for i in range(0, mix.shape[0], hop)]
    onnx_out = np.concatenate(onnx_parts + [runner.flush()])
    return compare(onnx_out, torch_stream(streaming, mix, runner.sample_rate))


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
        if not isinstance(model.masknet, S4MMaskNet):
            raise ValueError(
                f"s4m-export-onnx exports S4M and S4M-tiny mask networks (S4MMaskNet); got "
                f"{type(model.masknet).__name__}"
            )
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
    lowerings of :mod:`speechbrain_s4m.onnx_lowering` (group norms as exact as
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
    """The exported separator through onnxruntime against PyTorch's offline forward,
    on a batch of two short excerpts of ``mix`` (an odd number of frames) and on the
    whole of it: the worst figures of :func:`compare`."""
    from speechbrain_s4m.onnx_runtime import OnnxSeparator

    runner = OnnxSeparator(directory)
    short = min(int(SHORT_CHECK_SECONDS * runner.sample_rate), mix.shape[0] // 2)
    batches = [np.stack([mix[:short], mix[short : 2 * short]]), mix[None]]
    figures = []
    for batch in batches:
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
        got = runner.separate_batch(batch)
        figures += [compare(g, e) for g, e in zip(got, expected)]
    return {
        "max_difference_over_peak": max(f["max_difference_over_peak"] for f in figures),
        "min_si_snr_db": min(f["min_si_snr_db"] for f in figures),
    }


# ------------------------------------------------------------------ writing the graphs
Tracer = Callable[[str], Dict[str, object]]
ParityCheck = Callable[[str], Dict[str, float]]


def write_graphs(
    out_dir: str, sample_rate: int, num_spks: int, graphs: Dict[str, Tuple[Tracer, ParityCheck]]
) -> Dict[str, Dict[str, float]]:
    """Trace every graph of ``graphs`` (its section name -> a function writing the file
    into a folder and returning its metadata, and the parity check run on that folder)
    into a staging folder beside ``out_dir``, check each against PyTorch and, when
    all pass, move the files and ``onnx_model.json`` into ``out_dir``, then remove a
    graph file of an earlier export that this one does not write (a non-causal model's
    graphs replacing a causal one's). Returns each graph's parity figures.

    Raises
    ------
    ValueError
        When a parity check fails; ``out_dir`` is then left as it was.
    """
    staging = tempfile.mkdtemp(prefix=".onnx-export-", dir=os.path.dirname(os.path.abspath(out_dir)) or ".")
    try:
        metadata: Dict[str, object] = {"format": "speechbrain-s4m onnx 1", "sample_rate": sample_rate}
        metadata.update(num_spks=num_spks, opset=OPSET)
        for name, (trace, _) in graphs.items():
            metadata[name] = trace(staging)
        _write_json(staging, metadata)  # the runners read it during the checks
        figures = {}
        for name, (_, check) in graphs.items():
            figures[name] = check(staging)
            failed = (
                figures[name]["max_difference_over_peak"] > PEAK_TOLERANCE
                or figures[name]["min_si_snr_db"] < SI_SNR_FLOOR_DB
            )
            if failed:
                raise ValueError(
                    f"the exported {metadata[name]['file']} differs from PyTorch: largest difference "
                    f"{figures[name]['max_difference_over_peak']:.3g} of the peak (at most {PEAK_TOLERANCE:g}), "
                    f"SI-SNR against PyTorch {figures[name]['min_si_snr_db']:.1f} dB (at least "
                    f"{SI_SNR_FLOOR_DB:g}); nothing was written to {out_dir}"
                )
            metadata[name]["parity"] = figures[name]
        _write_json(staging, metadata)
        os.makedirs(out_dir, exist_ok=True)
        for name in [metadata[graph]["file"] for graph in graphs] + [METADATA]:
            os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
        for graph, name in GRAPH_FILES.items():  # after the new metadata, which no longer names it
            if graph not in graphs and os.path.exists(os.path.join(out_dir, name)):
                os.remove(os.path.join(out_dir, name))
        return figures
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_json(directory: str, metadata: Dict[str, object]) -> None:
    with open(os.path.join(directory, METADATA), "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2)


def export_stream_step(
    streaming: StreamingSeparator, out_dir: str, chunk_ms: float = 16.0, check_mix: Optional[np.ndarray] = None
) -> Dict[str, float]:
    """The stream step alone: ``out_dir/stream_step.onnx`` with ``onnx_model.json``,
    checked against PyTorch (as in :func:`export_graphs`); returns the parity figures."""
    sample_rate = _sample_rate(streaming.sample_rate)
    mix = check_signal(sample_rate) if check_mix is None else check_mix
    graphs = {"stream_step": _stream_step_graph(streaming, chunk_ms, mix)}
    return write_graphs(out_dir, sample_rate, streaming.num_spks, graphs)["stream_step"]


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
    model = model.eval()
    mix = check_signal(sample_rate) if check_mix is None else np.asarray(check_mix, dtype=np.float32)
    graphs = {
        "separator": (partial(trace_separator, model), partial(separator_parity, model=model, mix=mix)),
    }
    if getattr(model.masknet, "causal", False):
        streaming = StreamingSeparator(model.encoder, model.masknet, model.decoder, sample_rate)
        graphs["stream_step"] = _stream_step_graph(streaming, chunk_ms, mix)
    return write_graphs(out_dir, sample_rate, int(model.masknet.num_spks), graphs)


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
    if not os.path.isfile(os.path.join(model_dir, "hyperparams.yaml")):
        raise FileNotFoundError(
            f"{model_dir} is not an s4m-export model folder: expected hyperparams.yaml, encoder.ckpt, "
            "masknet.ckpt and decoder.ckpt there (write one with s4m-export)"
        )
    names = (*GRAPH_FILES.values(), METADATA)
    existing = [n for n in names if os.path.exists(os.path.join(out_dir, n))]
    if existing and not force:
        raise FileExistsError(f"{out_dir} already holds {', '.join(existing)}; pass --force to replace them")
    separator = load_exported(model_dir)
    mods, sample_rate = separator.mods, int(separator.hparams.sample_rate)
    check_mix = None
    if check_audio is not None:
        signal, rate = read_audio(check_audio)
        if rate != sample_rate:
            raise ValueError(f"--check-audio {check_audio}: {rate} Hz, expected the model's {sample_rate} Hz")
        check_mix = signal.numpy()
    model = EncoderMaskerDecoder(mods.encoder, mods.masknet, mods.decoder)
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
