"""The one separation forward pass (encoder -> masker -> apply masks -> decoder -> fit
length), against SpeechBrain's own separator on the same lobes."""

import pytest
import torch
from speechbrain.inference.separation import SepformerSeparation
from speechbrain.lobes.models.dual_path import Decoder, Encoder

from speechbrain_s4m.lobes import S4MMaskNet, WaveformEncoder
from speechbrain_s4m.lobes.encoder_masker_decoder import EncoderMaskerDecoder, fit_length


def lobes(num_spks=2):
    torch.manual_seed(0)
    return (
        WaveformEncoder(16),
        S4MMaskNet(9, num_spks=num_spks, hidden_channels=16, num_blocks=1),
        Decoder(9, 1, 16, stride=4, bias=False),
    )


@pytest.mark.parametrize("num_spks", [1, 2, 3])
@pytest.mark.parametrize("length", [1000, 1003])
def test_matches_speechbrain_separate_batch(num_spks, length):
    encoder, masknet, decoder = lobes(num_spks)
    ours = EncoderMaskerDecoder(encoder, masknet, decoder).eval()
    theirs = SepformerSeparation({"encoder": encoder, "masknet": masknet, "decoder": decoder}, {"num_spks": num_spks})
    mix = torch.randn(2, length)
    with torch.no_grad():
        expected = theirs.separate_batch(mix)  # decodes one speaker at a time
        got = ours(mix)
    assert got.shape == (2, length, num_spks)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_batch_of_one_and_single_speaker():
    """SpeechBrain's Decoder squeezes a batch of one decoded encoding to [time]."""
    encoder, masknet, decoder = lobes(num_spks=1)
    out = EncoderMaskerDecoder(encoder, masknet, decoder)(torch.randn(1, 500))
    assert out.shape == (1, 500, 1)


def test_works_with_speechbrain_lobes_and_gradients_reach_every_lobe():
    encoder, decoder = Encoder(kernel_size=16, out_channels=9), Decoder(9, 1, 16, stride=8, bias=False)
    masknet = S4MMaskNet(9, hidden_channels=16, num_blocks=2)  # one block leaves the fusion unused
    separator = EncoderMaskerDecoder(encoder, masknet, decoder)
    separator(torch.randn(2, 800)).square().mean().backward()
    for name, lobe in (("encoder", encoder), ("masknet", masknet), ("decoder", decoder)):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in lobe.parameters()), name


def test_holds_the_lobes_not_copies():
    encoder, masknet, decoder = lobes()
    separator = EncoderMaskerDecoder(encoder, masknet, decoder)
    assert separator.encoder is encoder and separator.masknet is masknet and separator.decoder is decoder


def test_train_mode_and_no_grad_agree():
    separator = EncoderMaskerDecoder(*lobes())
    mix = torch.randn(2, 900)
    train_out = separator.train()(mix)
    with torch.no_grad():
        eval_out = separator.eval()(mix)
    torch.testing.assert_close(train_out.detach(), eval_out, rtol=1e-5, atol=1e-6)


def test_bad_shapes_are_named():
    separator = EncoderMaskerDecoder(*lobes())
    with pytest.raises(ValueError, match=r"\[batch, time\], got \(1000,\)"):
        separator(torch.randn(1000))
    wrong_masker = EncoderMaskerDecoder(
        WaveformEncoder(16), torch.nn.Identity(), Decoder(9, 1, 16, stride=4, bias=False)
    )
    with pytest.raises(ValueError, match="mask net returned"):
        wrong_masker(torch.randn(1, 1000))
    with pytest.raises(ValueError, match=r"\[batch, time, spks\]"):
        fit_length(torch.zeros(5, 2), 3)


def test_fit_length_pads_with_zeros_and_trims():
    estimates = torch.ones(1, 4, 2)
    padded = fit_length(estimates, 6)
    assert torch.equal(padded[:, 4:], torch.zeros(1, 2, 2)) and torch.equal(padded[:, :4], estimates)
    assert torch.equal(fit_length(estimates, 3), estimates[:, :3])
