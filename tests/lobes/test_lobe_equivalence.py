"""The benchmark's models, built from the recipe YAMLs, against references built by
hand in the paper's configuration (the lobes' constructors called directly, as
``s4m-bench`` did before it read the recipes).

The YAML-built model's weights load into the reference strictly (same parameter and
buffer names and shapes), and both then give the same separation: settings that
change no shape (attention heads, chunk size, normalisation order) agree as well.
"""

import pytest
import torch
from torch import nn

from speechbrain_s4m.benchmark import models, report
from speechbrain_s4m.lobes.encoder_masker_decoder import EncoderMaskerDecoder


def reference_s4m(sample_rate: int, decoder_s4: bool, num_blocks: int = 16) -> EncoderMaskerDecoder:
    """S4M / S4M-tiny as in the paper: 4 ms encoder kernel, 1 ms stride, 16 unfolded
    passes of the shared block."""
    from speechbrain.lobes.models.dual_path import Decoder

    from speechbrain_s4m.lobes import S4MMaskNet, WaveformEncoder

    K = 4 * sample_rate // 1000
    E = K // 2 + 1
    return EncoderMaskerDecoder(
        WaveformEncoder(K),
        S4MMaskNet(E, num_spks=2, decoder_s4=decoder_s4, num_blocks=num_blocks),
        Decoder(E, 1, K, stride=K // 4, bias=False),
    )


def reference_sepformer(num_transformer_layers: int = 8) -> EncoderMaskerDecoder:
    """SpeechBrain's Sepformer recipe configuration."""
    from speechbrain.lobes.models.dual_path import Decoder, Dual_Path_Model, Encoder, SBTransformerBlock

    def transformer() -> nn.Module:
        layer = dict(d_model=256, nhead=8, d_ffn=1024, dropout=0, use_positional_encoding=True, norm_before=True)
        return SBTransformerBlock(num_layers=num_transformer_layers, **layer)

    chunking = dict(num_layers=2, K=250, norm="ln", linear_layer_after_inter_intra=False, skip_around_intra=True)
    masknet = Dual_Path_Model(256, 256, transformer(), transformer(), num_spks=2, **chunking)
    return EncoderMaskerDecoder(
        Encoder(kernel_size=16, out_channels=256), masknet, Decoder(256, 1, 16, stride=8, bias=False)
    )


REFERENCES = {
    "S4M-tiny": lambda sample_rate, **kwargs: reference_s4m(sample_rate, decoder_s4=False, **kwargs),
    "S4M": lambda sample_rate, **kwargs: reference_s4m(sample_rate, decoder_s4=True, **kwargs),
    "Sepformer": lambda sample_rate, **kwargs: reference_sepformer(**kwargs),
}


@pytest.mark.parametrize("name", list(models.DEFAULT_MODELS))
def test_yaml_model_has_the_layers_of_the_hand_built_reference(name):
    built = models.build_model(name)  # LRS2Mix recipe, 16 kHz
    reference = REFERENCES[name](models.SAMPLE_RATE)
    assert models.count_parameters(built) == models.count_parameters(reference)
    assert [type(m) for m in built.modules()] == [type(m) for m in reference.modules()]
    reference.load_state_dict(built.state_dict(), strict=True)
    if name != "Sepformer":  # unfolded passes of the one shared block: no parameters of their own
        assert built.masknet.num_blocks == reference.masknet.num_blocks
    # The paper's parameter count (Tables 1-3, one decimal in millions).
    assert models.count_parameters(built) / 1e6 == pytest.approx(report.PAPER[name]["params_m"], rel=0.03)


@pytest.mark.parametrize(
    "name, overrides",
    # Shorter, same settings otherwise: one pass of S4M's shared block (the same
    # parameters as 16 passes), one transformer layer per Sepformer block.
    [("S4M-tiny", {"num_blocks": 1}), ("S4M", {"num_blocks": 1}), ("Sepformer", {"num_transformer_layers": 1})],
)
def test_yaml_model_separates_as_the_hand_built_reference(name, overrides):
    built = models.build_model(name, overrides=overrides)
    reference = REFERENCES[name](models.SAMPLE_RATE, **overrides).eval()
    reference.load_state_dict(built.state_dict(), strict=True)
    # 0.25 s: 250 S4M frames, 500 Sepformer frames (more than one chunk of K = 250).
    mix = torch.randn(1, models.SAMPLE_RATE // 4, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.allclose(built(mix), reference(mix), atol=1e-6)


@pytest.mark.parametrize("name", ["S4M-tiny", "S4M"])
def test_sample_rate_sets_the_encoder_kernel_as_by_hand(name):
    built = models.build_model(name, sample_rate=8000)
    reference = REFERENCES[name](8000)
    reference.load_state_dict(built.state_dict(), strict=True)
    assert built.encoder.kernel_size == reference.encoder.kernel_size == (32,)
