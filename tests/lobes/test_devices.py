"""Every lobe, forward and backward, on another device than the CPU: ``meta`` (a
stand-in for CUDA, checked by tests/device_checks.SameDevice), and ``cuda`` when
present. A tensor built on the CPU inside a device computation fails here. Also: a
model cast to half precision runs in it, and the depthwise convolution's two
backward passes agree."""

import pytest
import torch
import torch.nn.functional as F
from device_checks import SameDevice
from speechbrain.lobes.models.dual_path import Decoder

from speechbrain_s4m.inference.streaming import StreamingSeparator, StreamStep
from speechbrain_s4m.lobes import S4, S4MMaskNet, WaveformEncoder
from speechbrain_s4m.lobes.depthwise import DepthwiseConvolution
from speechbrain_s4m.lobes.encoder_masker_decoder import EncoderMaskerDecoder
from speechbrain_s4m.lobes.s4_kernel import DiagonalKernel, DPLRKernel
from speechbrain_s4m.lobes.stream_state import StreamState
from speechbrain_s4m.training.brain import start_from_mixture

DEVICES = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])


def lobes(causal=False, decoder_s4=False, blocks=2):
    """A small separator's encoder, mask net and decoder (CPU)."""
    masknet = S4MMaskNet(17, hidden_channels=16, num_blocks=blocks, causal=causal, decoder_s4=decoder_s4)
    return WaveformEncoder(32), masknet, Decoder(17, 1, 32, stride=8, bias=False)


def forward_backward(module, *inputs):
    """``module(*inputs)``'s sum, backward; every parameter must get a gradient on the
    inputs' device."""
    with SameDevice():
        output = module(*inputs)
        output.float().sum().backward()
    device = inputs[0].device
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.device == device, name
    return output


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal, decoder_s4", [(False, False), (False, True), (True, False), (True, True)])
def test_separator_trains_on_the_device(device, causal, decoder_s4):
    # S4M-tiny and S4M, offline and causal: the whole forward pass and its gradients.
    separator = EncoderMaskerDecoder(*lobes(causal, decoder_s4)).to(device)
    estimates = forward_backward(separator, torch.randn(2, 997, device=device))
    assert estimates.shape == (2, 997, 2) and estimates.device.type == device


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["dplr", "diag"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_s4_convolution_mode_on_the_device(device, mode, bidirectional):
    layer = S4(8, mode=mode, bidirectional=bidirectional).to(device)
    x = torch.randn(2, 8, 37, device=device, requires_grad=True)
    assert forward_backward(layer, x).shape == (2, 8, 37)
    assert x.grad.device.type == device


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["dplr", "diag"])
def test_s4_recurrent_mode_on_the_device(device, mode):
    layer = S4(8, mode=mode, bidirectional=False).to(device)
    x = torch.randn(2, 8, 37, device=device, requires_grad=True)
    with SameDevice():
        recurrence = layer.recurrence()  # the system as constants: gradients reach the input and the output layer
        first, state = layer.forward_recurrent(x[..., :20], None, recurrence)
        second, state = layer.forward_recurrent(x[..., 20:], state, recurrence)
        torch.cat([first, second], -1).sum().backward()
    assert state.device.type == x.grad.device.type == layer.output_linear.weight.grad.device.type == device


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel_class", [DPLRKernel, DiagonalKernel])
def test_s4_kernels_on_the_device(device, kernel_class):
    kernel = kernel_class(d_model=4, d_state=8, directions=2).to(device)
    with SameDevice():
        taps, spectrum, system = kernel(50), kernel.spectrum(50, 128), kernel.discretize()
        (taps.sum() + spectrum.abs().sum()).backward()
    assert taps.device.type == spectrum.device.type == system.transition.device.type == device


@pytest.mark.parametrize("device", DEVICES)
def test_start_from_mixture_on_the_device(device):
    # The Brain moves the modules to the device before start_from_mixture runs.
    encoder, masknet, decoder = (module.to(device) for module in lobes())
    with SameDevice():
        start_from_mixture(encoder, masknet, decoder)
    assert decoder.weight.device.type == device


@pytest.mark.parametrize("device", DEVICES)
def test_causal_stream_steps_on_the_device(device):
    stream = StreamingSeparator(*(module.to(device) for module in lobes(causal=True, blocks=1)))
    frames = 2 * stream.block_frames
    samples = torch.randn((frames - 1) * stream.stride + stream.kernel, device=device)
    with torch.inference_mode(), SameDevice():
        state = StreamState()
        first, tail = stream.step(samples, frames, state, stream.initial_tail())
        second, tail = stream.step(samples, frames, state, tail, torch.tensor(frames - 3, device=device))
        step = StreamStep(stream, blocks=2)
        out, *carried = step(samples, torch.tensor(frames, device=device), *step.initial_state())
    assert first.shape == second.shape == out.shape == (frames * stream.stride, 2)
    assert {t.device.type for t in (first, second, tail, out, *carried)} == {device}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_model_cast_to_half_precision_runs_in_it(dtype):
    separator = EncoderMaskerDecoder(*lobes()).to(dtype)
    estimates = separator(torch.randn(2, 997).to(dtype))
    estimates.float().sum().backward()
    assert estimates.dtype == dtype and torch.isfinite(estimates).all()


@pytest.mark.parametrize("stride, padding", [(1, 2), (2, 2), (2, 0)])
def test_both_depthwise_backward_passes_agree(stride, padding):
    # The CPU's written-out backward and the native one that runs elsewhere.
    x = torch.randn(3, 6, 41, requires_grad=True)
    weight = torch.randn(6, 1, 5, requires_grad=True)
    bias = torch.randn(6, requires_grad=True)
    grad = torch.randn(3, 6, (41 + 2 * padding - 5) // stride + 1)
    written_out = torch.autograd.grad(
        DepthwiseConvolution.apply(x, weight, bias, stride, padding), (x, weight, bias), grad
    )
    native = torch.autograd.grad(F.conv1d(x, weight, bias, stride, padding, groups=6), (x, weight, bias), grad)
    for mine, theirs in zip(written_out, native):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
