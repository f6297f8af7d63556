"""Tests for the separation metrics (speechbrain_s4m.metrics).

SDR is checked against ``mir_eval.separation.bss_eval_sources`` on real read speech
(mini-librispeech resampled to 8 kHz, in ``../shared/data`` next to the repository;
skipped when absent) and on generated speech-like signals (always run).
"""

import itertools
import math
import warnings
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import scipy.signal
import torch

from speechbrain_s4m.metrics import (
    apply_permutation,
    best_permutation,
    sdr,
    separation_metrics,
    si_snr,
)

SAMPLE_RATE = 8000
LIBRISPEECH_8K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mini-librispeech-8k"
MIR_EVAL_TOL_DB = 0.1


# ------------------------------------------------------------------------ helpers
def _mir_eval_bss(reference: np.ndarray, estimate: np.ndarray, permute: bool) -> Tuple[np.ndarray, np.ndarray]:
    """mir_eval SDR ``[num_spks]`` per reference source, and its permutation (estimate
    ``perm[j]`` is matched with reference ``j``); inputs are ``[num_spks, time]``."""
    mir_eval_separation = pytest.importorskip("mir_eval.separation")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bss_eval_sources is deprecated in mir_eval 0.8
        sdr_, _, _, perm = mir_eval_separation.bss_eval_sources(reference, estimate, compute_permutation=permute)
    return sdr_, perm


def _mir_eval_sdr(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """mir_eval SDR of already aligned sources (no permutation)."""
    return _mir_eval_bss(reference, estimate, permute=False)[0]


def _numpy_si_snr(estimate: np.ndarray, reference: np.ndarray, eps: float = 1e-8) -> float:
    """SI-SNR (dB) of two 1-D signals, written out directly."""
    s_hat = estimate - estimate.mean()
    s = reference - reference.mean()
    s_target = np.dot(s_hat, s) * s / (np.dot(s, s) + eps)
    e_noise = s_hat - s_target
    return float(10 * np.log10(np.sum(s_target**2) / (np.sum(e_noise**2) + eps) + eps))


def _imperfect_estimates(sources: np.ndarray, leak: float, rng: np.random.Generator) -> np.ndarray:
    """Sources ``[num_spks, time]`` plus ``leak`` of the other sources, a little noise,
    lightly low-pass filtered: a realistic separation output (SDR 5-20 dB)."""
    num_spks = sources.shape[0]
    others = sources.sum(axis=0, keepdims=True) - sources
    noise = 0.03 * sources.std(axis=1, keepdims=True) * rng.standard_normal(sources.shape)
    est = sources + leak / max(num_spks - 1, 1) * others + noise
    b, a = scipy.signal.butter(2, 0.8)  # gentle low-pass at 3.2 kHz
    return scipy.signal.lfilter(b, a, est, axis=1)


def _speech_like(rng: np.random.Generator, num_samples: int) -> np.ndarray:
    """Noise through two formant resonances, with a syllable-rate envelope and pauses."""
    x = rng.standard_normal(num_samples)
    for low, high, radius in ((300.0, 900.0, 0.97), (1200.0, 2500.0, 0.95)):
        freq = rng.uniform(low, high)
        a = [1.0, -2 * radius * math.cos(2 * math.pi * freq / SAMPLE_RATE), radius**2]
        x = scipy.signal.lfilter([1.0], a, x)
    t = np.arange(num_samples) / SAMPLE_RATE
    envelope = np.sin(2 * math.pi * rng.uniform(3.0, 5.0) * t + rng.uniform(0, 6.3)) ** 2
    envelope *= t % 1.3 < 1.0  # a pause every 1.3 s
    return x * envelope / np.std(x)


def _to_torch(signals: np.ndarray) -> torch.Tensor:
    """``[num_spks, time]`` numpy -> ``[1, time, num_spks]`` float64 tensor."""
    return torch.from_numpy(np.ascontiguousarray(signals.T))[None]


def _load_librispeech_pairs(num_pairs: int, seconds: float) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``num_pairs`` pairs of ``seconds``-long crops of utterances of two speakers."""
    soundfile = pytest.importorskip("soundfile")
    root = LIBRISPEECH_8K / "train-clean-5"
    if not root.is_dir():
        pytest.skip(f"real-speech data not found at {root} (mini-librispeech-8k)")
    length = int(seconds * SAMPLE_RATE)
    offset = SAMPLE_RATE // 4
    crops = []
    for speaker in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(speaker.glob("*/*.flac")):
            info = soundfile.info(str(path))
            if info.samplerate == SAMPLE_RATE and info.frames >= offset + length:
                audio, _ = soundfile.read(str(path), start=offset, frames=length, dtype="float64")
                crops.append(audio if audio.ndim == 1 else audio[:, 0])
                break  # one utterance per speaker
        if len(crops) == 2 * num_pairs:
            break
    if len(crops) < 2 * num_pairs:
        pytest.skip(f"fewer than {2 * num_pairs} usable 8 kHz utterances under {root}")
    return [(crops[2 * i], crops[2 * i + 1]) for i in range(num_pairs)]


# ------------------------------------------------------------------------- SI-SNR
def test_si_snr_matches_numpy_formula():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((3, 4000, 2)) + 0.3  # non-zero means are removed
    est = ref + 0.2 * rng.standard_normal(ref.shape) - 0.1
    got = si_snr(torch.from_numpy(est), torch.from_numpy(ref))
    assert got.shape == (3, 2) and got.dtype == torch.float64
    expected = [[_numpy_si_snr(est[b, :, j], ref[b, :, j]) for j in range(2)] for b in range(3)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-9)


def test_si_snr_matches_speechbrain_cal_si_snr():
    from speechbrain.nnet.losses import cal_si_snr

    torch.manual_seed(0)
    ref = torch.randn(2, 3000, 2)
    est = ref + 0.3 * torch.randn(2, 3000, 2)
    expected = -cal_si_snr(ref.transpose(0, 1), est.transpose(0, 1).clone())[0]  # [B, C]
    torch.testing.assert_close(si_snr(est, ref), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("scale", [1e-3, 0.5, 7.0, -2.0])
def test_si_snr_is_scale_invariant(scale):
    torch.manual_seed(1)
    ref = torch.randn(2, 8000, 2, dtype=torch.float64)
    est = ref + 0.3 * torch.randn_like(ref)
    # exact up to the absolute eps=1e-8 in the energies (signal energy ~8e-3 at 1e-3)
    torch.testing.assert_close(si_snr(scale * est, ref), si_snr(est, ref), atol=1e-4, rtol=0)


def test_float32_and_float64_agree():
    torch.manual_seed(2)
    ref = torch.randn(2, 6000, 2, dtype=torch.float64)
    est = ref + 0.3 * torch.randn_like(ref)
    mix = ref.sum(dim=-1)
    scores64 = separation_metrics(mix, est, ref)
    scores32 = separation_metrics(mix.float(), est.float(), ref.float())
    for key, value in scores32.items():
        assert value.dtype == torch.float32 and scores64[key].dtype == torch.float64
        torch.testing.assert_close(value.double(), scores64[key], atol=1e-3, rtol=0)


# -------------------------------------------------------------------- permutation
@pytest.mark.parametrize("num_spks", [2, 3])
def test_best_permutation_recovers_swapped_sources(num_spks):
    torch.manual_seed(3)
    perms = list(itertools.permutations(range(num_spks)))
    batch = len(perms)
    ref = torch.randn(batch, 4000, num_spks)
    est = ref + 0.2 * torch.randn_like(ref)
    # utterance b has its estimate sources shuffled by perms[b]
    shuffled = torch.stack([est[b][:, list(p)] for b, p in enumerate(perms)])
    perm, scores = best_permutation(shuffled, ref)
    assert perm.shape == (batch, num_spks) and perm.dtype == torch.int64
    for b, p in enumerate(perms):
        assert [p[k] for k in perm[b].tolist()] == list(range(num_spks))
    torch.testing.assert_close(apply_permutation(shuffled, perm), est)
    torch.testing.assert_close(scores, si_snr(est, ref))


def test_separation_metrics_ignore_estimate_order():
    torch.manual_seed(4)
    ref = torch.randn(2, 6000, 2, dtype=torch.float64)
    est = ref + 0.4 * torch.randn_like(ref)
    mix = ref.sum(dim=-1)
    aligned = separation_metrics(mix, est, ref)
    swapped = separation_metrics(mix, est.flip(-1), ref)
    for key in aligned:
        torch.testing.assert_close(swapped[key], aligned[key])


# --------------------------------------------------------------- SDR vs mir_eval
def _check_against_mir_eval(mixture: np.ndarray, sources: np.ndarray, estimates: np.ndarray) -> float:
    """Compare sdr/separation_metrics with mir_eval for one utterance; return the
    largest absolute difference (dB). Arrays are ``[time]`` and ``[num_spks, time]``."""
    num_spks = sources.shape[0]
    ours = sdr(_to_torch(estimates), _to_torch(sources))[0].numpy()
    theirs = _mir_eval_sdr(sources, estimates)
    diffs = [np.abs(ours - theirs).max()]

    # estimate in reverse order: SI-SNR permutation vs mir_eval's (SIR) permutation
    shuffled = estimates[::-1].copy()
    theirs_perm, mir_perm = _mir_eval_bss(sources, shuffled, permute=True)
    perm, _ = best_permutation(_to_torch(shuffled), _to_torch(sources))
    assert perm[0].tolist() == mir_perm.tolist()
    ours_perm = sdr(apply_permutation(_to_torch(shuffled), perm), _to_torch(sources))
    diffs.append(np.abs(ours_perm[0].numpy() - theirs_perm).max())

    # the per-utterance summary, improvements included
    scores = separation_metrics(torch.from_numpy(mixture)[None], _to_torch(shuffled), _to_torch(sources))
    theirs_mix = _mir_eval_sdr(sources, np.stack([mixture] * num_spks))
    diffs.append(abs(scores["sdr"].item() - theirs_perm.mean()))
    diffs.append(abs(scores["sdr_i"].item() - (theirs_perm - theirs_mix).mean()))
    return float(max(diffs))


def test_sdr_matches_mir_eval_on_real_speech():
    pairs = _load_librispeech_pairs(num_pairs=4, seconds=2.5)
    rng = np.random.default_rng(5)
    worst = 0.0
    for (first, second), leak in zip(pairs, [0.15, 0.2, 0.27, 0.35]):
        sources = np.stack([first / first.std(), second / second.std()])
        sources[1] *= 10 ** (rng.uniform(-2.5, 2.5) / 20)  # WSJ0-2mix-like SNR spread
        estimates = _imperfect_estimates(sources, leak, rng)
        values = sdr(_to_torch(estimates), _to_torch(sources))
        assert bool(((values > 5) & (values < 20)).all()), values  # realistic range
        worst = max(worst, _check_against_mir_eval(sources.sum(0), sources, estimates))
    assert worst < MIR_EVAL_TOL_DB


@pytest.mark.parametrize("num_spks", [2, 3])
def test_sdr_matches_mir_eval_on_generated_signals(num_spks):
    rng = np.random.default_rng(6 + num_spks)
    sources = np.stack([_speech_like(rng, 2 * SAMPLE_RATE) for _ in range(num_spks)])
    estimates = _imperfect_estimates(sources, 0.2, rng)
    assert _check_against_mir_eval(sources.sum(0), sources, estimates) < MIR_EVAL_TOL_DB


def test_sdr_float32_input_matches_mir_eval():
    rng = np.random.default_rng(9)
    sources = np.stack([_speech_like(rng, SAMPLE_RATE) for _ in range(2)])
    estimates = _imperfect_estimates(sources, 0.3, rng)
    ours = sdr(_to_torch(estimates).float(), _to_torch(sources).float())
    assert ours.dtype == torch.float32
    theirs = _mir_eval_sdr(sources, estimates)
    # float32 only rounds the inputs: the computation itself is float64
    np.testing.assert_allclose(ours[0].numpy(), theirs, rtol=0, atol=1e-3)


def test_sdr_of_signals_shorter_than_the_filter():
    rng = np.random.default_rng(10)
    sources = rng.standard_normal((2, 300))
    estimates = sources + 0.3 * rng.standard_normal((2, 300))
    ours = sdr(_to_torch(estimates), _to_torch(sources))[0].numpy()
    theirs = _mir_eval_sdr(sources, estimates)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=MIR_EVAL_TOL_DB)


def test_long_signals_are_scored():
    """60 s at 8 kHz, 2 speakers: white noise 10 dB down gives about 10 dB."""
    torch.manual_seed(11)
    ref = torch.randn(1, 60 * SAMPLE_RATE, 2)
    est = ref + math.sqrt(0.1) * torch.randn_like(ref)
    scores = separation_metrics(ref.sum(dim=-1), est, ref)
    assert abs(scores["si_snr"].item() - 10.0) < 0.1
    # the 512-tap filter can fit a little of the white noise: SDR >= SI-SNR here
    assert 10.0 - 0.1 < scores["sdr"].item() < 10.0 + 0.5


# ------------------------------------------------------------------- improvements
def test_improvements_are_differences_with_the_mixture():
    torch.manual_seed(12)
    ref = torch.randn(3, 5000, 2, dtype=torch.float64)
    est = (ref + 0.5 * torch.randn_like(ref)).flip(-1)
    mix = ref.sum(dim=-1)
    scores = separation_metrics(mix, est, ref)
    mix_as_estimate = mix[:, :, None].expand_as(ref)
    perm, si = best_permutation(est, ref)
    aligned = apply_permutation(est, perm)
    torch.testing.assert_close(scores["si_snr"], si.mean(dim=1))
    torch.testing.assert_close(scores["si_snr_i"], scores["si_snr"] - si_snr(mix_as_estimate, ref).mean(dim=1))
    torch.testing.assert_close(scores["sdr"], sdr(aligned, ref).mean(dim=1))
    torch.testing.assert_close(scores["sdr_i"], scores["sdr"] - sdr(mix_as_estimate, ref).mean(dim=1))
    for value in scores.values():
        assert value.shape == (3,)


# ---------------------------------------------------------------- degenerate input
def test_silent_signals_score_the_floor():
    torch.manual_seed(13)
    ref = torch.randn(2, 4000, 2)
    est = ref + 0.1 * torch.randn_like(ref)
    est[0, :, 1] = 0.0  # silent estimate
    ref[1, :, 0] = 0.0  # silent reference
    for metric in (si_snr, sdr):
        values = metric(est, ref)
        assert bool(torch.isfinite(values).all())
        assert values[0, 1].item() == pytest.approx(-80.0, abs=1e-3)
        assert values[1, 0].item() == pytest.approx(-80.0, abs=1e-3)
        assert values[0, 0].item() > 15 and values[1, 1].item() > 15
    scores = separation_metrics(torch.zeros(2, 4000), est, ref)  # silent mixture
    assert all(bool(torch.isfinite(v).all()) for v in scores.values())
    assert bool((scores["sdr_i"] > 40).all())  # improvement over the -80 dB floor


def test_perfect_estimate_is_clamped_for_sdr():
    torch.manual_seed(14)
    ref = torch.randn(1, 4000, 2, dtype=torch.float64)
    values = sdr(ref.clone(), ref)
    assert bool(torch.isfinite(values).all()) and bool((values > 79).all())
    assert bool((values <= 80.0 + 1e-9).all())


@pytest.mark.parametrize("name", ["mixture", "estimate", "reference"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_raises(name, bad):
    signals = {
        "mixture": torch.randn(2, 1000),
        "estimate": torch.randn(2, 1000, 2),
        "reference": torch.randn(2, 1000, 2),
    }
    signals[name][1, 10] = bad
    with pytest.raises(ValueError, match=rf"^{name}: contains \d+ non-finite"):
        separation_metrics(**signals)


# ------------------------------------------------------------------- shape errors
@pytest.mark.parametrize(
    "estimate_shape, reference_shape, name",
    [
        ((2, 1000), (2, 1000, 2), "estimate"),  # rank 2
        ((2, 1000, 2), (2, 1000), "reference"),
        ((2, 1000, 2, 1), (2, 1000, 2), "estimate"),  # rank 4
        ((2, 1000, 3), (2, 1000, 2), "estimate"),  # speakers differ
        ((2, 999, 2), (2, 1000, 2), "estimate"),  # time differs
        ((1, 1000, 2), (2, 1000, 2), "estimate"),  # batch differs
    ],
)
@pytest.mark.parametrize("metric", [si_snr, sdr, best_permutation])
def test_shape_errors_name_the_argument(estimate_shape, reference_shape, name, metric):
    with pytest.raises(ValueError, match=rf"^{name}: expected .*got"):
        metric(torch.randn(estimate_shape), torch.randn(reference_shape))


@pytest.mark.parametrize("mixture_shape", [(2, 1000, 1), (2, 999), (3, 1000), (1000,)])
def test_mixture_shape_error(mixture_shape):
    with pytest.raises(ValueError, match=r"^mixture: expected shape \(2, 1000\)"):
        separation_metrics(torch.randn(mixture_shape), torch.randn(2, 1000, 2), torch.randn(2, 1000, 2))


def test_other_argument_errors():
    ref = torch.randn(1, 1000, 2)
    with pytest.raises(ValueError, match="^estimate: expected a floating-point"):
        si_snr(torch.ones(1, 1000, 2, dtype=torch.int64), ref)
    with pytest.raises(ValueError, match="^eps: "):
        si_snr(ref, ref, eps=0.0)
    with pytest.raises(ValueError, match="^filter_length: "):
        sdr(ref, ref, filter_length=0)
    with pytest.raises(ValueError, match=r"^perm: expected an integer tensor of shape"):
        apply_permutation(ref, torch.tensor([[0, 1, 2]]))
