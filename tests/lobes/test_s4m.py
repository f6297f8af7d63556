"""Tests for the S4M / S4M-tiny mask networks and the separator they form with
SpeechBrain's Decoder."""

import pytest
import torch
from speechbrain.lobes.models.dual_path import Decoder
from test_encoder import reset_layer_recursively
from test_s4 import pinned_lobes

from speechbrain_s4m.lobes import S4, S4MMaskNet, WaveformEncoder
from speechbrain_s4m.lobes.s4m import S4MBlock


def separator(sample_rate: int = 16000, decoder_s4: bool = True, **masknet_options):
    """Encoder, MaskNet and SpeechBrain Decoder with the paper's 4 ms kernel."""
    K = 4 * sample_rate // 1000
    E = K // 2 + 1
    encoder = WaveformEncoder(K)
    masknet = S4MMaskNet(E, num_spks=2, decoder_s4=decoder_s4, **masknet_options)
    decoder = Decoder(E, 1, K, stride=K // 4, bias=False)
    return encoder, masknet, decoder


def separate(encoder, masknet, decoder, mix):
    """The SpeechBrain separation forward pass: [batch, time] -> [batch, time, spks]."""
    mix_w = encoder(mix)
    masks = masknet(mix_w)  # [spks, batch, E, L]
    estimates = torch.stack([decoder(mix_w * m) for m in masks], dim=-1)
    return estimates[:, : mix.shape[-1]]


@pytest.mark.parametrize("decoder_s4, paper_millions", [(False, 1.80), (True, 3.60)], ids=["S4M-tiny", "S4M"])
def test_parameter_count_matches_the_paper(decoder_s4, paper_millions):
    count = sum(p.numel() for m in separator(16000, decoder_s4) for p in m.parameters())
    print(f"{'S4M' if decoder_s4 else 'S4M-tiny'}: {count / 1e6:.3f} M (paper {paper_millions} M)")
    assert abs(count / 1e6 - paper_millions) <= 0.03 * paper_millions


@pytest.mark.parametrize("length", [1, 7, 8001])
@pytest.mark.parametrize("decoder_s4", [False, True], ids=["tiny", "full"])
def test_masks_shape_and_non_negative(length, decoder_s4):
    torch.manual_seed(0)
    masknet = S4MMaskNet(in_channels=17, num_blocks=2, decoder_s4=decoder_s4)
    with torch.no_grad():
        masks = masknet(torch.randn(3, 17, length))
    assert masks.shape == (2, 3, 17, length)
    assert (masks >= 0).all() and torch.isfinite(masks).all()
    assert masks.sum() > 0


def test_kernels_are_computed_once_per_forward(monkeypatch):
    calls = []
    original = S4.kernel_spectrum

    def counting(self, length):
        calls.append(length)
        return original(self, length)

    monkeypatch.setattr(S4, "kernel_spectrum", counting)
    masknet = S4MMaskNet(in_channels=9, hidden_channels=16, num_blocks=16, decoder_s4=True)
    masknet(torch.randn(1, 9, 100))
    # One S4 on F_m and three in the decoder, each once despite 16 unfolded passes,
    # at the lengths of the frames padded to a multiple of 8.
    assert masknet.padded_length(100) == 104
    assert sorted(calls) == sorted(masknet.block.scale_lengths(104)) == [13, 26, 52, 104]


def test_unfolding_shares_weights():
    small = S4MMaskNet(in_channels=9, hidden_channels=16, num_blocks=1)
    large = S4MMaskNet(in_channels=9, hidden_channels=16, num_blocks=16)
    assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in large.parameters())


def test_tiny_has_no_decoder_s4_and_full_has_three():
    count = lambda block: sum(isinstance(m, S4) for m in block.modules())  # noqa: E731
    assert count(S4MBlock(decoder_s4=False)) == 1
    assert count(S4MBlock(decoder_s4=True)) == 4


def test_every_parameter_gets_a_finite_gradient():
    torch.manual_seed(1)
    encoder, masknet, decoder = separator(8000, decoder_s4=True, hidden_channels=32, num_blocks=2)
    mix = torch.randn(2, 2000)
    estimates = separate(encoder, masknet, decoder, mix)
    assert estimates.shape == (2, 2000, 2)
    estimates.square().mean().backward()
    for module in (encoder, masknet, decoder):
        for name, p in module.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_separation_forward_in_bf16_autocast_on_cpu():
    torch.manual_seed(2)
    encoder, masknet, decoder = separator(8000, decoder_s4=True, num_blocks=2)
    mix = torch.randn(2, 8000)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        estimates = separate(encoder, masknet, decoder, mix)
    assert estimates.shape == (2, 8000, 2)
    assert torch.isfinite(estimates).all()


def test_speechbrain_reset_keeps_a_working_model():
    torch.manual_seed(3)
    modules = separator(8000, decoder_s4=False, hidden_channels=32, num_blocks=2)
    s4 = modules[1].block.global_s4.s4
    imag_before = s4.kernel.imag.detach().clone()
    for module in modules:
        reset_layer_recursively(module)
    assert torch.equal(s4.kernel.imag, imag_before)  # HiPPO init kept
    estimates = separate(*modules, torch.randn(1, 4000))
    assert torch.isfinite(estimates).all()


@pytest.mark.parametrize(
    "shape, match",
    [
        ((17, 100), r"\[batch, 17, frames >= 1\], got \(17, 100\)"),
        ((2, 16, 100), r"\[batch, 17, frames >= 1\], got \(2, 16, 100\)"),
        ((2, 17, 0), r"\[batch, 17, frames >= 1\], got \(2, 17, 0\)"),
    ],
)
def test_bad_input_is_a_clear_error(shape, match):
    masknet = S4MMaskNet(in_channels=17, hidden_channels=16, num_blocks=1)
    with pytest.raises(ValueError, match="S4MMaskNet: expected encoder output of shape " + match):
        masknet(torch.randn(*shape))


@pytest.mark.parametrize("name", ["S4M-tiny", "S4M"])
def test_masks_of_commit_617590d_hold_for_multiples_of_8_frames(name):
    """Lengths that are multiples of 8 frames give the masks of commit 617590d (old
    state dict naming included) to float32 rounding. Other lengths now run on frames
    zero-padded to the next multiple of 8 (exact pooling and upsampling), so their
    masks differ from that commit's, which pooled and upsampled uneven lengths."""
    entry = pinned_lobes()[name]
    masknet = S4MMaskNet(**entry["options"])
    masknet.load_state_dict(entry["state_dict"])
    for length, (x, expected) in entry["outputs"].items():
        with torch.no_grad():
            masks = masknet(x)
        assert masks.shape == expected.shape
        if length % 8 == 0:
            error = (masks - expected).abs().max() / expected.abs().max()
            assert error < 1e-5, f"length {length}: relative error {error:.2e}"


@pytest.mark.parametrize("decoder_s4", [False, True], ids=["tiny", "full"])
def test_train_mode_and_no_grad_compute_the_same_masks(decoder_s4):
    torch.manual_seed(4)
    masknet = S4MMaskNet(in_channels=9, hidden_channels=16, num_blocks=3, decoder_s4=decoder_s4)
    x = torch.randn(2, 9, 77)
    trained = masknet.train()(x)
    trained.sum().backward()  # in-place updates stay autograd-safe
    with torch.no_grad():
        inferred = masknet.eval()(x)
    assert torch.allclose(trained, inferred, atol=1e-6)


def test_padding_frames_do_not_leak_into_the_masks_length():
    torch.manual_seed(5)
    masknet = S4MMaskNet(in_channels=9, hidden_channels=16, num_blocks=2)
    with torch.no_grad():
        masks = masknet(torch.randn(1, 9, 13))
    assert masks.shape == (2, 1, 9, 13)


def test_block_rejects_lengths_that_are_not_multiples_of_its_scales():
    block = S4MBlock(bottleneck_channels=8, hidden_channels=16, num_scales=4)
    with pytest.raises(ValueError, match="positive multiple of 8 frames, got 50"):
        block(torch.randn(1, 8, 50))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length", [13, 16, 77])
def test_signal_frames_make_padding_to_whole_blocks_invisible(causal, length):
    """Frames up to whole blocks appended after signal_frames (any content) change
    nothing in the masks of the signal, and get zero masks: a caller may pad a signal
    to whole blocks itself."""
    torch.manual_seed(6)
    masknet = S4MMaskNet(in_channels=9, hidden_channels=16, num_blocks=2, causal=causal).eval()
    x = torch.randn(2, 9, length)
    extra = masknet.padded_length(length) - length
    padded = torch.cat([x, 3 * torch.randn(2, 9, extra)], -1)
    with torch.no_grad():
        expected = masknet(x)
        masks = masknet(padded, signal_frames=torch.tensor(length))
    assert masks.shape == (2, 2, 9, length + extra)
    assert torch.allclose(masks[..., :length], expected, atol=1e-5)
    assert not masks[..., length:].any()


@pytest.mark.parametrize("factor", [1, 2, 8])
def test_the_lobes_operators_pass_torch_opcheck(factor):
    # The two operators that an ONNX export lowers whole: their fake (shape) and
    # autograd registrations agree with the computation.
    from speechbrain_s4m.lobes.s4m import broadcast_gate, pairwise_mean

    local = torch.randn(2, 3, 16, dtype=torch.float64, requires_grad=True)
    rho, tau = (torch.randn(2, 3, 16 // factor, dtype=torch.float64, requires_grad=True) for _ in "12")
    torch.library.opcheck(broadcast_gate, (local, rho, tau))
    torch.library.opcheck(pairwise_mean, (local,))
    assert torch.autograd.gradcheck(pairwise_mean, (local,))
    expected = local * rho.repeat_interleave(factor, -1) + tau.repeat_interleave(factor, -1)
    assert torch.allclose(broadcast_gate(local, rho, tau), expected)
    assert torch.allclose(pairwise_mean(local), local.view(2, 3, 8, 2).mean(-1))
