"""Built-in demo: separate a generated two-speaker mixture with an untrained S4M.

This shows the three lobes working together the way SpeechBrain's separation
recipes compose them (Encoder -> MaskNet -> Decoder), with shapes and timing. It
needs no dataset. Run it with ``make demo`` or ``python -m speechbrain_s4m.demo``.
"""

import argparse
import math
import time

import torch
from speechbrain.lobes.models.dual_path import Decoder

from speechbrain_s4m.lobes import S4MMaskNet, WaveformEncoder


def harmonic_voice(f0: float, seconds: float, sample_rate: int, seed: int) -> torch.Tensor:
    """A speech-like test signal: a harmonic tone with vibrato and a syllabic envelope."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    pitch = f0 * (1 + 0.05 * torch.sin(2 * math.pi * 3 * t))
    phase = 2 * math.pi * torch.cumsum(pitch, 0) / sample_rate
    harmonics = sum(torch.sin(h * phase) / h for h in range(1, 8))
    envelope = 0.5 * (1 + torch.sin(2 * math.pi * 4 * t + 6 * torch.rand(1, generator=generator)))
    return harmonics * envelope


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--sample-rate", type=int, default=8000)
    parser.add_argument("--tiny", action="store_true", help="S4M-tiny instead of S4M")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    K = 4 * args.sample_rate // 1000  # 4 ms kernel
    E = K // 2 + 1
    encoder = WaveformEncoder(K)
    masknet = S4MMaskNet(E, num_spks=2, decoder_s4=not args.tiny)
    decoder = Decoder(E, 1, K, stride=K // 4, bias=False)
    modules = (encoder, masknet, decoder)
    params = sum(p.numel() for m in modules for p in m.parameters())
    name = "S4M-tiny" if args.tiny else "S4M"

    sources = torch.stack(
        [
            harmonic_voice(140.0, args.seconds, args.sample_rate, seed=1),
            harmonic_voice(220.0, args.seconds, args.sample_rate, seed=2),
        ]
    )
    mix = sources.sum(0, keepdim=True)  # [batch=1, time]
    print(f"{name} (untrained): {params / 1e6:.2f} M parameters, kernel {K}, {E} bases")
    print(f"mixture: {tuple(mix.shape)} at {args.sample_rate} Hz")
    start = time.perf_counter()
    with torch.inference_mode():
        mix_w = encoder(mix)
        masks = masknet(mix_w)
        estimates = torch.stack([decoder(mix_w * m) for m in masks], dim=-1)
        estimates = estimates[:, : mix.shape[-1]]
    elapsed = time.perf_counter() - start
    print(f"encoder output: {tuple(mix_w.shape)}  masks: {tuple(masks.shape)}")
    print(f"estimates: {tuple(estimates.shape)}  [batch, time, speakers]")
    print(
        f"forward: {elapsed:.2f} s for {args.seconds:.1f} s of audio "
        f"(real-time factor {elapsed / args.seconds:.3f}, {torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
