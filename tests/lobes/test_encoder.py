"""Tests for the waveform encoder (speechbrain_s4m.lobes.encoder)."""

import pytest
import torch
from speechbrain.lobes.models.dual_path import Decoder

from speechbrain_s4m.lobes import WaveformEncoder


def test_defaults_follow_the_paper():
    encoder = WaveformEncoder(kernel_size=64)  # 4 ms at 16 kHz
    assert encoder.out_channels == 33
    assert encoder.stride == (16,)
    assert encoder.bias is None
    assert encoder.weight.shape == (33, 1, 64)


@pytest.mark.parametrize("length", [32, 33, 39, 40, 8000, 8001])
def test_frames_cover_the_whole_signal(length):
    encoder = WaveformEncoder(kernel_size=32)
    frames = encoder(torch.randn(2, length))
    assert frames.shape[:2] == (2, 17)
    assert frames.shape[-1] == encoder.num_frames(length)
    decoder = Decoder(17, 1, 32, stride=8, bias=False)
    assert decoder(frames).shape[-1] >= length  # trimmed to the mixture length later
    assert (frames.shape[-1] - 2) * 8 + 32 < length  # and no frame is wasted


def test_last_samples_reach_the_encoding():
    encoder = WaveformEncoder(kernel_size=32)
    x = torch.zeros(1, 1003)
    x[0, -1] = 1.0
    assert encoder(x).abs().sum() > 0


def reset_layer_recursively(layer):
    """What SpeechBrain's separation recipes (train.py) run on every module."""
    if hasattr(layer, "reset_parameters"):
        layer.reset_parameters()
    for child in layer.modules():
        if child is not layer:
            reset_layer_recursively(child)


def test_reset_parameters_survives_speechbrain_reset():
    encoder = WaveformEncoder(kernel_size=64)
    with torch.no_grad():
        encoder.weight.fill_(0.0)
    reset_layer_recursively(encoder)
    bound = (6 / (33 * 64 + 1 * 64)) ** 0.5  # xavier uniform: fan_in 64, fan_out 33 * 64
    assert encoder.weight.abs().max() <= bound
    assert encoder.weight.std() > 0.3 * bound


@pytest.mark.parametrize("shape", [(100,), (2, 1, 100), (2, 100, 2)])
def test_wrong_rank_is_a_clear_error(shape):
    with pytest.raises(ValueError, match=r"WaveformEncoder: expected .*\[batch, time\], got"):
        WaveformEncoder(kernel_size=32)(torch.randn(*shape))


def test_input_shorter_than_kernel_is_a_clear_error():
    with pytest.raises(ValueError, match="shorter than one encoder kernel"):
        WaveformEncoder(kernel_size=32)(torch.randn(2, 31))


@pytest.mark.parametrize("kernel_size, channels", [(16, 9), (32, 17), (64, 33), (64, 256)])
def test_inverse_filters_make_the_decoder_undo_the_encoder(kernel_size, channels):
    torch.manual_seed(0)
    encoder = WaveformEncoder(kernel_size=kernel_size, out_channels=channels)
    stride = kernel_size // 4
    decoder = Decoder(channels, 1, kernel_size, stride=stride, bias=False)
    with torch.no_grad():
        decoder.weight.copy_(encoder.inverse_filters())
    x = torch.randn(2, 4000)
    y = decoder(encoder(x))[..., :4000]  # [batch, time]
    edge = kernel_size - stride  # covered by fewer than K / S frames
    torch.testing.assert_close(y[:, edge:-edge], x[:, edge:-edge], atol=1e-4, rtol=1e-4)
    assert (y[:, -1] - x[:, -1]).abs().max() > 1e-3  # the last samples are not covered
