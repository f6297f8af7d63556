"""Export a trained causal S4M / S4M-tiny to ONNX, to run without PyTorch: ``s4m-export-onnx``.

``s4m-export-onnx MODEL_DIR OUT_DIR`` reads an ``s4m-export`` folder and writes

* ``stream_step.onnx``: one step of :class:`~speechbrain_s4m.streaming.StreamingSeparator`
  as a pure function, ``(window, signal_frames, state...) -> (sources, state...)``, where
  ``window`` holds the samples of ``F`` encoder frames (``F S + K - S``, consecutive
  windows overlapping by ``K - S``), and the state tensors are the convolution caches,
  the S4 states and the decoder's overlap-add tail;
* ``onnx_model.json``: sample rate, speakers, frames and samples per step, hop,
  latency, opset and the state tensors' names and shapes.

The graph is the stream's own forward pass traced at a fixed window (:class:`StreamStep`):
the same lobes, the S4 layers running the chunk recurrence of
:mod:`speechbrain_s4m.lobes.s4_recurrence` with its operators as constants, so the graph
holds no complex tensor and no FFT. :mod:`speechbrain_s4m.onnx_runtime` runs it with
numpy and onnxruntime alone; on a whole recording the stream is the offline separation
of the causal model.

Before anything is written, the export streams a check signal through onnxruntime and
PyTorch's ``StreamingSeparator`` chunk by chunk, and refuses the graph (exit 1, the
largest difference named) when they differ by more than ``1e-4`` of the peak or
``0.01`` dB SI-SNR. Files are written to a temporary folder and moved into place, so
nothing half-written stays behind.

Legend: ``F`` frames per step, ``S`` encoder stride, ``K`` encoder kernel, ``C`` speakers.

Authors
 * speechbrain-s4m contributors
"""

import json
import os
import shutil
import sys
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from speechbrain_s4m.cli import command_parser, usage_error
from speechbrain_s4m.data.audio import read_audio
from speechbrain_s4m.lobes.stream_state import StreamState
from speechbrain_s4m.metrics import si_snr
from speechbrain_s4m.streaming import StreamingSeparator

OPSET = 18
PEAK_TOLERANCE = 1e-4  # largest |onnx - torch| over the peak |torch|
# SI-SNR of the ONNX sources against PyTorch's: at 80 dB the difference e is below 1e-4
# of the signal, so a separation of up to 20 dB SI-SNR against any reference (a residual
# of at least 0.1 of the signal) moves by under 20 log10(1 + 1e-3) < 0.01 dB.
SI_SNR_FLOOR_DB = 80.0
CHECK_SECONDS = 7.3


class StreamStep(nn.Module):
    """One step of a :class:`~speechbrain_s4m.streaming.StreamingSeparator` over ``F``
    frames, with its state as explicit tensors in and out, for tracing.

    It runs the separator's own step (``_separate_frames``): a warm-up step on zeros
    finds the state tensors the stream carries (their modules, unfolded passes and
    shapes) and builds the S4 recurrences, which the traced step then holds as
    constants.

    Arguments
    ---------
    streaming : StreamingSeparator
        The stream of a causal model.
    blocks : int
        Blocks of ``2^(S-1)`` frames per step.

    Example
    -------
    >>> from speechbrain.lobes.models.dual_path import Decoder
    >>> from speechbrain_s4m.lobes import S4MMaskNet, WaveformEncoder
    >>> stream = StreamingSeparator(WaveformEncoder(32), S4MMaskNet(17, hidden_channels=16,
    ...     num_blocks=1, causal=True), Decoder(17, 1, 32, stride=8, bias=False))
    >>> step = StreamStep(stream, blocks=2)
    >>> step.window_samples, len(step.state_names)
    (152, 18)
    >>> out, *state = step(torch.zeros(152), torch.tensor(16), *step.initial_state())
    >>> out.shape
    torch.Size([128, 2])
    """

    def __init__(self, streaming: StreamingSeparator, blocks: int):
        super().__init__()
        if blocks < 1:
            raise ValueError(f"StreamStep: expected at least one block per step, got {blocks}")
        self.streaming = streaming
        self.model = streaming.model  # registered, so that the traced graph holds its weights
        self.frames = blocks * streaming.block_frames
        self.hop_samples = self.frames * streaming.stride
        self.window_samples = self.hop_samples + streaming.kernel - streaming.stride
        streaming.reset()
        with torch.no_grad():
            streaming._separate_frames(torch.zeros(self.window_samples, device=streaming.device), self.frames)
        self._warm = streaming._state
        self._keys = list(self._warm._tensors)  # (unfolded pass, module), in the order the step sets them
        names = {module: name for name, module in self.model.masknet.named_modules()}
        self.state_names = ["decoder_tail"] + [f"pass{scope}.{names[module]}" for scope, module in self._keys]
        self.state_shapes = [tuple(streaming._tail.shape)] + [tuple(self._warm._tensors[k].shape) for k in self._keys]
        streaming.reset()

    def initial_state(self) -> List[torch.Tensor]:
        """The state at the start of a stream: zeros."""
        return [torch.zeros(shape, device=self.streaming.device) for shape in self.state_shapes]

    def forward(
        self, window: torch.Tensor, signal_frames: torch.Tensor, *state: torch.Tensor
    ) -> Tuple[torch.Tensor, ...]:
        """``window [F S + K - S]``, ``signal_frames`` (``F``, or fewer in the last step,
        whose later frames are padding) and the state -> ``sources [F S, C]`` and the
        new state."""
        carried = StreamState()
        carried._cached = self._warm._cached  # the S4 recurrences, built once
        carried._tensors = dict(zip(self._keys, state[1:]))
        carried.signal_frames = signal_frames
        self.streaming._state, self.streaming._tail = carried, state[0]
        sources = self.streaming._separate_frames(window, self.frames)
        return (sources, self.streaming._tail, *[carried._tensors[k] for k in self._keys])


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


def export_stream_step(
    streaming: StreamingSeparator, out_dir: str, chunk_ms: float = 16.0, check_mix: Optional[np.ndarray] = None
) -> Dict[str, float]:
    """Trace :class:`StreamStep` to ``out_dir/stream_step.onnx`` with
    ``onnx_model.json``, check it against PyTorch, and return the parity figures.

    Raises
    ------
    ValueError
        When the parity check fails; ``out_dir`` is then left as it was.
    """
    sample_rate = streaming.sample_rate
    if sample_rate is None:
        raise ValueError("export_stream_step: the StreamingSeparator needs its sample_rate")
    blocks = max(1, round(chunk_ms / 1000 * sample_rate / streaming.block_samples))
    step = StreamStep(streaming, blocks).eval()
    inputs = (torch.zeros(step.window_samples), torch.tensor(step.frames), *step.initial_state())
    input_names = ["window", "signal_frames"] + [f"state.{n}" for n in step.state_names]
    output_names = ["sources"] + [f"next.{n}" for n in step.state_names]
    staging = tempfile.mkdtemp(prefix=".onnx-export-", dir=os.path.dirname(os.path.abspath(out_dir)) or ".")
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                step, inputs, dynamo=True, opset_version=OPSET, input_names=input_names, output_names=output_names
            )
        program.save(os.path.join(staging, "stream_step.onnx"), external_data=False)
        metadata = {
            "format": "speechbrain-s4m onnx 1",
            "sample_rate": sample_rate,
            "num_spks": streaming.num_spks,
            "stream_step": {
                "file": "stream_step.onnx",
                "frames": step.frames,
                "hop_samples": step.hop_samples,
                "window_samples": step.window_samples,
                "encoder_kernel": streaming.kernel,
                "encoder_stride": streaming.stride,
                # a step waits for its whole window: (F - 1) S + K - 1 (the PyTorch stream's, at F = 2^(S-1))
                "latency_samples": step.window_samples - 1,
                "inputs": ["window", "signal_frames"],
                "state": [
                    {"name": f"state.{name}", "shape": list(shape)}
                    for name, shape in zip(step.state_names, step.state_shapes)
                ],
            },
            "opset": OPSET,
        }
        with open(os.path.join(staging, "onnx_model.json"), "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=2)
        mix = check_signal(sample_rate) if check_mix is None else np.asarray(check_mix, dtype=np.float32)
        figures = parity_check(staging, streaming, mix)
        if figures["max_difference_over_peak"] > PEAK_TOLERANCE or figures["min_si_snr_db"] < SI_SNR_FLOOR_DB:
            raise ValueError(
                f"the exported stream step differs from PyTorch: largest difference "
                f"{figures['max_difference_over_peak']:.3g} of the peak (at most {PEAK_TOLERANCE:g}), "
                f"SI-SNR against PyTorch {figures['min_si_snr_db']:.1f} dB (at least {SI_SNR_FLOOR_DB:g}); "
                f"nothing was written to {out_dir}"
            )
        metadata["parity"] = figures
        with open(os.path.join(staging, "onnx_model.json"), "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=2)
        os.makedirs(out_dir, exist_ok=True)
        for name in ("stream_step.onnx", "onnx_model.json"):
            os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
        return figures
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_onnx(
    model_dir: str, out_dir: str, chunk_ms: float = 16.0, force: bool = False, check_audio: Optional[str] = None
) -> Dict[str, float]:
    """``s4m-export-onnx``: the ONNX graphs of an ``s4m-export`` folder of a causal
    model, checked against PyTorch. Returns the parity figures."""
    if not os.path.isfile(os.path.join(model_dir, "hyperparams.yaml")):
        raise FileNotFoundError(
            f"{model_dir} is not an s4m-export model folder: expected hyperparams.yaml, encoder.ckpt, "
            "masknet.ckpt and decoder.ckpt there (write one with s4m-export)"
        )
    existing = [n for n in ("stream_step.onnx", "onnx_model.json") if os.path.exists(os.path.join(out_dir, n))]
    if existing and not force:
        raise FileExistsError(f"{out_dir} already holds {', '.join(existing)}; pass --force to replace them")
    streaming = StreamingSeparator.from_folder(model_dir)
    check_mix = None
    if check_audio is not None:
        signal, rate = read_audio(check_audio)
        if rate != streaming.sample_rate:
            raise ValueError(f"--check-audio {check_audio}: {rate} Hz, expected the model's {streaming.sample_rate} Hz")
        check_mix = signal.numpy()
    return export_stream_step(streaming, out_dir, chunk_ms, check_mix)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``s4m-export-onnx``; returns the exit status."""
    parser = command_parser(
        prog="s4m-export-onnx",
        description=(
            "Export an s4m-export folder of a causal model (hparams/s4m_causal.yaml, s4m_tiny_causal.yaml) to "
            "ONNX: stream_step.onnx and onnx_model.json, checked against PyTorch before they are written."
        ),
    )
    parser.add_argument("model_dir", help="an s4m-export model folder")
    parser.add_argument("out_dir", help="the folder to write the graphs to")
    parser.add_argument("--chunk-ms", type=float, default=16.0, help="audio per stream step, in ms (default 16)")
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
    print(
        f"Exported {args.model_dir} to {args.out_dir}: stream_step.onnx matches PyTorch within "
        f"{figures['max_difference_over_peak']:.2g} of the peak (SI-SNR against PyTorch "
        f"{figures['min_si_snr_db']:.1f} dB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
