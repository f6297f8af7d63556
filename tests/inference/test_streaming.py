"""Causal S4M lobes and the StreamingSeparator: causality, stream == offline, bad input."""

import pytest
import torch
from speechbrain.lobes.models.dual_path import Decoder

from speechbrain_s4m.inference.streaming import StreamingSeparator
from speechbrain_s4m.lobes import S4MMaskNet, WaveformEncoder
from speechbrain_s4m.lobes.encoder_masker_decoder import EncoderMaskerDecoder
from speechbrain_s4m.lobes.stream_state import StreamState

KERNEL = 32  # 4 ms at 8 kHz, stride 8


def causal_lobes(decoder_s4: bool = False, mode_seed: int = 0, **masknet_options):
    torch.manual_seed(mode_seed)
    options = dict(hidden_channels=24, num_blocks=2, decoder_s4=decoder_s4, causal=True) | masknet_options
    encoder = WaveformEncoder(KERNEL)
    masknet = S4MMaskNet(KERNEL // 2 + 1, **options)
    decoder = Decoder(KERNEL // 2 + 1, 1, KERNEL, stride=KERNEL // 4, bias=False)
    for module in (encoder, masknet, decoder):
        module.eval()
    return encoder, masknet, decoder


def offline(lobes, mix: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return EncoderMaskerDecoder(*lobes)(mix[None])[0]  # [time, spks]


def streamed(stream: StreamingSeparator, mix: torch.Tensor, chunks) -> torch.Tensor:
    parts = [stream.process(chunk) for chunk in mix.split(chunks)]
    return torch.cat(parts + [stream.flush()])


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ---------------------------------------------------------------- causal lobes
@pytest.mark.parametrize("decoder_s4", [False, True])
@pytest.mark.parametrize("length", [3000, 4321])
def test_output_before_s_minus_latency_ignores_input_after_s(decoder_s4, length):
    lobes = causal_lobes(decoder_s4)
    latency = StreamingSeparator(*lobes).latency_samples
    torch.manual_seed(1)
    mix = torch.randn(length)
    reference = offline(lobes, mix)
    for s in (length // 3, length // 2 + 77, length - 500):
        perturbed = mix.clone()
        perturbed[s:] += 10 * torch.randn(length - s)
        out = offline(lobes, perturbed)
        unchanged = s - latency
        assert torch.allclose(out[:unchanged], reference[:unchanged], atol=1e-6, rtol=1e-5), s
        assert not torch.allclose(out[s:], reference[s:], atol=1e-3)  # and the rest did change


def test_latency_is_exact_for_the_first_sample_of_a_block():
    lobes = causal_lobes()
    stream = StreamingSeparator(*lobes)
    latency, block = stream.latency_samples, stream.block_samples
    assert latency == (8 - 1) * 8 + KERNEL - 1  # 87 samples: 10.9 ms at 8 kHz
    torch.manual_seed(2)
    mix = torch.randn(2000)
    u = 10 * block  # the first sample of a block
    reference = offline(lobes, mix)
    perturbed = mix.clone()
    perturbed[u + latency] += 10.0
    assert not torch.allclose(offline(lobes, perturbed)[u], reference[u], atol=1e-6)


@pytest.mark.parametrize("decoder_s4", [False, True])
def test_causal_mask_frames_depend_only_on_their_block_and_before(decoder_s4):
    masknet = causal_lobes(decoder_s4)[1]
    torch.manual_seed(3)
    x = torch.randn(1, KERNEL // 2 + 1, 80)
    with torch.no_grad():
        reference = masknet(x)
        for t in (17, 43, 63):  # inside blocks: earlier frames of the same block see them
            perturbed = x.clone()
            perturbed[..., t:] += torch.randn_like(perturbed[..., t:])
            block_start = t // masknet.block_frames * masknet.block_frames
            out = masknet(perturbed)
            assert torch.allclose(out[..., :block_start], reference[..., :block_start], atol=1e-6)
            assert not torch.allclose(out[..., block_start:t], reference[..., block_start:t], atol=1e-6)


@pytest.mark.parametrize("decoder_s4", [False, True])
def test_causal_parameter_count_is_within_5_percent_of_the_offline_model(decoder_s4):
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    offline_count = count(S4MMaskNet(17, decoder_s4=decoder_s4))
    causal_count = count(S4MMaskNet(17, decoder_s4=decoder_s4, causal=True))
    assert causal_count <= offline_count
    assert causal_count / offline_count > 0.95


def test_causal_train_mode_and_no_grad_compute_the_same_masks():
    masknet = causal_lobes(True)[1]
    x = torch.randn(2, KERNEL // 2 + 1, 50)
    masknet.train()
    trained = masknet(x)
    trained.sum().backward()
    with torch.no_grad():
        assert torch.allclose(trained, masknet(x), atol=1e-6)
    assert all(p.grad is not None for p in masknet.parameters())


def test_a_stream_needs_a_causal_block():
    masknet = S4MMaskNet(17, hidden_channels=16, num_blocks=1)
    with pytest.raises(ValueError, match="causal=True"):
        masknet(torch.randn(1, 17, 16), StreamState())


# ---------------------------------------------------------- stream == offline
@pytest.mark.parametrize("decoder_s4", [False, True])
@pytest.mark.parametrize(
    "chunks",
    [
        64,  # one block per call
        16000,  # seconds
        [1, 7, 300, 64, 65, 1000, 3, 2500, 128, 4000, 11, 5000],  # uneven
    ],
)
def test_stream_then_flush_equals_offline(decoder_s4, chunks):
    lobes = causal_lobes(decoder_s4)
    torch.manual_seed(4)
    mix = torch.randn(15077)
    stream = StreamingSeparator(*lobes)
    if isinstance(chunks, list):
        chunks = chunks + [mix.shape[0] - sum(chunks)]
    out = streamed(stream, mix, chunks)
    assert out.shape == (mix.shape[0], 2)
    assert relative_error(out, offline(lobes, mix)) < 1e-4


def test_every_length_and_short_streams_match_offline():
    lobes = causal_lobes()
    stream = StreamingSeparator(*lobes)
    for length in (KERNEL, KERNEL + 1, 64, 100, 151, 152, 153, 1000):
        mix = torch.randn(length)
        assert relative_error(streamed(stream, mix, 37), offline(lobes, mix)) < 1e-4, length
    assert stream.flush().shape == (0, 2)  # nothing received: nothing returned


def test_reset_starts_a_new_signal():
    lobes = causal_lobes()
    stream = StreamingSeparator(*lobes)
    first, second = torch.randn(3000), torch.randn(2000)
    stream.process(first)
    stream.reset()
    assert relative_error(streamed(stream, second, 500), offline(lobes, second)) < 1e-4


def test_carried_state_does_not_grow_with_the_stream():
    stream = StreamingSeparator(*causal_lobes(True))
    torch.manual_seed(5)
    stream.process(torch.randn(4000))
    size = stream.state_bytes()
    for _ in range(20):
        stream.process(torch.randn(4000))
    assert stream.state_bytes() == size


# ----------------------------------------------------------------- bad input
def test_wrong_rank_is_a_clear_error():
    stream = StreamingSeparator(*causal_lobes())
    with pytest.raises(ValueError, match=r"expected a chunk of shape \[time\].*\(2, 100\)"):
        stream.process(torch.randn(2, 100))


def test_a_non_finite_chunk_is_refused_and_the_stream_continues():
    lobes = causal_lobes()
    stream = StreamingSeparator(*lobes)
    torch.manual_seed(6)
    mix = torch.randn(4000)
    parts = [stream.process(mix[:1500])]
    bad = torch.randn(300)
    bad[[3, 30, 200]] = float("nan")
    bad[100] = float("inf")
    with pytest.raises(ValueError, match=r"chunk 1 \(counting from 0\) holds 4 non-finite"):
        stream.process(bad)
    parts += [stream.process(mix[1500:]), stream.flush()]
    assert relative_error(torch.cat(parts), offline(lobes, mix)) < 1e-4


def test_a_non_causal_model_is_refused():
    encoder, _, decoder = causal_lobes()
    with pytest.raises(ValueError, match="streaming needs a causal=True model"):
        StreamingSeparator(encoder, S4MMaskNet(17, hidden_channels=16, num_blocks=1), decoder)


def test_numpy_chunks_are_accepted():
    lobes = causal_lobes()
    stream = StreamingSeparator(*lobes)
    mix = torch.randn(1000)
    out = torch.cat([stream.process(mix.numpy()), stream.flush()])
    assert relative_error(out, offline(lobes, mix)) < 1e-4
