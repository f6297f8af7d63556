"""The separation forward pass, written once: encoder -> masker -> apply masks ->
decoder -> fit length.

The Brain (:mod:`speechbrain_s4m.training.brain`), the long-audio path
(:mod:`speechbrain_s4m.inference.long_audio`), the benchmark and the exports all separate
through :class:`EncoderMaskerDecoder`, with the lobes of any SpeechBrain separation
recipe (S4M's, Sepformer's, Conv-TasNet's).

Dimension legend
----------------
B: batch, T: time (samples), E: encoder channels, L: encoder frames, C: speakers.

Authors
 * speechbrain-s4m contributors
"""

import torch
import torch.nn.functional as F
from torch import nn


def fit_length(estimates: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad or trim ``estimates`` ``[B, T', C]`` to ``[B, length, C]``.

    Example
    -------
    >>> fit_length(torch.ones(1, 5, 2), 7).shape, fit_length(torch.ones(1, 5, 2), 3).shape
    (torch.Size([1, 7, 2]), torch.Size([1, 3, 2]))
    """
    if estimates.dim() != 3:
        raise ValueError(f"fit_length: expected estimates [batch, time, spks], got {tuple(estimates.shape)}")
    return F.pad(estimates, (0, 0, 0, length - estimates.shape[1]))  # a negative pad trims


def first_layer(module: nn.Module, kind: type, role: str) -> nn.Module:
    """The first ``kind`` layer (e.g. ``nn.Conv1d``) inside ``module``; ``role`` names
    the module in the ``ValueError`` raised when there is none.

    Example
    -------
    >>> from speechbrain_s4m.lobes import WaveformEncoder
    >>> first_layer(WaveformEncoder(32), nn.Conv1d, "encoder").stride
    (8,)
    """
    for layer in module.modules():
        if isinstance(layer, kind):
            return layer
    raise ValueError(f"{role} {type(module).__name__} has no {kind.__name__} layer")


def encoder_kernel_size(encoder: nn.Module) -> int:
    """Kernel size of the first ``Conv1d`` of an encoder (ours or SpeechBrain's): the
    shortest input it can encode.

    Example
    -------
    >>> from speechbrain_s4m.lobes import WaveformEncoder
    >>> encoder_kernel_size(WaveformEncoder(32))
    32
    """
    return int(first_layer(encoder, nn.Conv1d, "encoder").kernel_size[0])


class EncoderMaskerDecoder(nn.Module):
    """A mask-based time-domain separator ``[B, T] -> [B, T, C]`` from three lobes.

    1. ``mix_w = encoder(mix)``: ``[B, T] -> [B, E, L]``;
    2. ``masks = masknet(mix_w)``: ``[C, B, E, L]``;
    3. ``masked = mix_w * masks``: ``[C, B, E, L]``;
    4. ``decoder`` on the C * B masked encodings at once: ``[B, T', C]``;
    5. zero-padded or trimmed to the mixture's ``T``.

    It holds the lobes, not copies: the Brain builds one over its hparams' lobes, and
    training, evaluation and inference go through the same :meth:`forward`.

    Arguments
    ---------
    encoder : torch.nn.Module
        ``[B, T] -> [B, E, L]`` (:class:`~speechbrain_s4m.lobes.WaveformEncoder`,
        SpeechBrain's ``Encoder``).
    masknet : torch.nn.Module
        ``[B, E, L] -> [C, B, E, L]`` (:class:`~speechbrain_s4m.lobes.S4MMaskNet`,
        SpeechBrain's ``Dual_Path_Model`` or Conv-TasNet ``MaskNet``).
    decoder : torch.nn.Module
        ``[N, E, L] -> [N, T']`` (SpeechBrain's ``Decoder``).

    Example
    -------
    >>> from speechbrain.lobes.models.dual_path import Decoder
    >>> from speechbrain_s4m.lobes import S4MMaskNet, WaveformEncoder
    >>> separator = EncoderMaskerDecoder(WaveformEncoder(16), S4MMaskNet(9, hidden_channels=16,
    ...     num_blocks=1), Decoder(9, 1, 16, stride=4, bias=False))
    >>> separator(torch.randn(2, 1000)).shape  # [B, T, C]
    torch.Size([2, 1000, 2])
    """

    def __init__(self, encoder: nn.Module, masknet: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.masknet = masknet
        self.decoder = decoder

    def forward_encoder(self, mix: torch.Tensor) -> torch.Tensor:
        """``[B, T] -> [B, E, L]``."""
        if mix.dim() != 2:
            raise ValueError(f"EncoderMaskerDecoder: expected a mixture [batch, time], got {tuple(mix.shape)}")
        return self.encoder(mix)

    def forward_masker(self, mix_w: torch.Tensor, **masknet_options) -> torch.Tensor:
        """``[B, E, L] -> [C, B, E, L]``; ``masknet_options`` go to the mask net (a
        causal S4M's ``stream``, S4M's ``signal_frames``)."""
        masks = self.masknet(mix_w, **masknet_options)
        if masks.dim() != 4 or masks.shape[1:] != mix_w.shape:
            raise ValueError(
                f"EncoderMaskerDecoder: the mask net returned {tuple(masks.shape)} for an "
                f"encoding {tuple(mix_w.shape)}; expected [spks, *{tuple(mix_w.shape)}]"
            )
        return masks

    @staticmethod
    def apply_masks(mix_w: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``[B, E, L]`` and ``[C, B, E, L] -> [C, B, E, L]``."""
        return mix_w.unsqueeze(0) * masks

    def forward_decoder(self, masked: torch.Tensor) -> torch.Tensor:
        """``[C, B, E, L] -> [B, T', C]``, decoding all speakers in one call."""
        C, B, E, L = masked.shape
        waveforms = self.decoder(masked.reshape(C * B, E, L))  # [C * B, T']
        return waveforms.reshape(C, B, -1).permute(1, 2, 0)  # SpeechBrain squeezes N = 1

    def separate_frames(self, mix: torch.Tensor, **masknet_options) -> torch.Tensor:
        """Steps 1 to 4: ``[B, T] -> [B, T', C]``, every frame decoded, not yet fitted
        to ``T`` (a stream overlap-adds its chunks; an exported graph's runner trims)."""
        mix_w = self.forward_encoder(mix)  # [B, E, L]
        masks = self.forward_masker(mix_w, **masknet_options)  # [C, B, E, L]
        return self.forward_decoder(self.apply_masks(mix_w, masks))  # [B, T', C]

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """``[B, T] -> [B, T, C]``."""
        return fit_length(self.separate_frames(mix), mix.shape[-1])
