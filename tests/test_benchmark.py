"""Tests for the efficiency benchmark (speechbrain_s4m.benchmark, ``s4m-bench``).

Everything runs on tiny models and inputs; no assertion depends on timings.
"""

import json
import math

import pytest
import torch
from torch import nn

from speechbrain_s4m import benchmark
from speechbrain_s4m.lobes import S4, S4MMaskNet, WaveformEncoder


def tiny_s4m(decoder_s4: bool):
    def build(sample_rate: int) -> benchmark.Separator:
        from speechbrain.lobes.models.dual_path import Decoder

        return benchmark.Separator(
            WaveformEncoder(16),
            S4MMaskNet(9, bottleneck_channels=8, hidden_channels=16, num_blocks=2, decoder_s4=decoder_s4),
            Decoder(9, 1, 16, stride=4, bias=False),
        )

    return build


def tiny_sepformer(sample_rate: int) -> benchmark.Separator:
    from speechbrain.lobes.models.dual_path import Decoder, Dual_Path_Model, Encoder, SBTransformerBlock

    def block():
        return SBTransformerBlock(num_layers=1, d_model=16, nhead=2, d_ffn=32, dropout=0,
                                  use_positional_encoding=True, norm_before=True)

    masknet = Dual_Path_Model(num_spks=2, in_channels=16, out_channels=16, num_layers=1, K=20,
                              intra_model=block(), inter_model=block(), norm="ln",
                              linear_layer_after_inter_intra=False, skip_around_intra=True)
    return benchmark.Separator(Encoder(kernel_size=16, out_channels=16), masknet,
                               Decoder(16, 1, 16, stride=8, bias=False))


@pytest.fixture
def tiny_models(monkeypatch):
    monkeypatch.setitem(benchmark.MODEL_BUILDERS, "S4M-tiny", tiny_s4m(False))
    monkeypatch.setitem(benchmark.MODEL_BUILDERS, "S4M", tiny_s4m(True))
    monkeypatch.setitem(benchmark.MODEL_BUILDERS, "Sepformer", tiny_sepformer)


# ------------------------------------------------------------------ MAC counting
def test_fft_rule():
    assert benchmark.rfft_macs(16) == 1.25 * 16 * 4
    assert benchmark.rfft_macs(1) == 0.0


def test_s4_layer_macs_match_a_hand_count():
    """One bidirectional DPLR S4 layer, H = 2 channels, N = 4 states, on L = 8 frames.

    FFT lengths: kernel M = 8 (F = 5 frequencies), convolution n = 16 (9 bins).
    Complex MACs (x 4 real) per channel for the kernel:
      bilinear discretisation 2 * 4^3 / 3 + (4 + 1) * 4^2      = 122.667
      A_bar^8: 3 squarings of a 4 x 4 matrix, 3 * 4^3          = 192
      C A_bar^8 for 2 directions, 2 * 4^2                      = 32
      numerators (2 * 2 + 2) * 4                               = 24
      Cauchy (2 + 1 + 6) * 4 states * 5 frequencies            = 180
      Woodbury 4 * 2 directions * 5 frequencies                = 40
    Real MACs per channel: irfft(8) and rfft(16) per direction,
      2 * (1.25 * 8 * 3) + 2 * (1.25 * 16 * 4)                 = 220
    FFT convolution per channel: rfft(16) + irfft(16) + 4 * 9 + D u (8) = 204.
    thop: the 1x1 convolution 2 -> 4 channels on 8 frames = 64.
    """
    kernel_per_channel = 4 * (2 * 4**3 / 3 + 5 * 4**2 + 3 * 4**3 + 2 * 4**2 + 6 * 4 + 9 * 4 * 5 + 4 * 2 * 5) + 220
    convolution_per_channel = 2 * 80 + 4 * 9 + 8
    torch.manual_seed(0)
    layer = S4(d_model=2, d_state=4, bidirectional=True, mode="dplr")
    macs = benchmark.count_macs(layer, inputs=(torch.randn(1, 2, 8),))
    assert macs["thop"] == 64
    assert math.isclose(macs["s4_kernel_generation"], 2 * kernel_per_channel)
    assert macs["s4_fft_convolution"] == 2 * convolution_per_channel
    assert macs["group_norm"] == 0 and macs["attention"] == 0
    assert math.isclose(macs["all"], 64 + 2 * kernel_per_channel + 2 * convolution_per_channel)
    assert math.isclose(macs["all"], 5637 + 1 / 3)


def test_s4_kernels_are_counted_once_per_masknet_forward():
    masknet = S4MMaskNet(9, bottleneck_channels=8, hidden_channels=16, num_blocks=3, decoder_s4=True)
    L = 40
    macs = benchmark.count_macs(masknet, inputs=(torch.randn(1, 9, L),))
    lengths = masknet.block.scale_lengths(L)
    layers = [masknet.block.global_s4.s4] + [m.s4 for m in masknet.block.decoder_s4]
    expected = benchmark.s4_kernel_macs(layers[0], lengths[-1]) + sum(
        benchmark.s4_kernel_macs(layer, length) for layer, length in zip(layers[1:], lengths[:-1])
    )
    assert math.isclose(macs["s4_kernel_generation"], expected)
    # ... while the FFT convolutions run in every one of the 3 unfolded passes.
    per_pass = benchmark.s4_convolution_macs(layers[0], 1, lengths[-1]) + sum(
        benchmark.s4_convolution_macs(layer, 1, length) for layer, length in zip(layers[1:], lengths[:-1])
    )
    assert math.isclose(macs["s4_fft_convolution"], 3 * per_pass)
    assert macs["group_norm"] > 0


def test_thop_counts_subclassed_convolutions_and_attention_is_added():
    encoder = WaveformEncoder(16)  # an nn.Conv1d subclass taking [batch, time]
    macs = benchmark.count_macs(encoder, inputs=(torch.randn(1, 100),))
    frames = encoder.num_frames(100)
    assert macs["thop"] == frames * 9 * 16  # output elements x C_in x kernel
    mha = nn.MultiheadAttention(8, 2)
    query = torch.randn(5, 1, 8)

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x)[0]

    macs = benchmark.count_macs(SelfAttention(), inputs=(query,))
    assert macs["attention"] == (5 + 10 + 5) * 64 + 2 * 5 * 5 * 8


def test_counting_leaves_no_hooks_or_patches_behind():
    model = tiny_s4m(True)(8000)
    benchmark.count_macs(model, seconds=0.05, sample_rate=8000)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert "kernel_spectrum" not in vars(module)
        assert "total_ops" not in module._buffers


# ---------------------------------------------------------------------- sections
def test_timing_functions_on_a_tiny_model():
    models = {"S4M-tiny": tiny_s4m(False)(8000).eval(), "Sepformer": tiny_sepformer(8000).eval()}
    cpu = benchmark.cpu_rtf(models, tracks=2, seconds=0.05, repeats=2, sample_rate=8000)
    assert set(cpu) == set(models)
    assert all(len(r["rounds"]) == 2 and r["rtf"] > 0 for r in cpu.values())
    # The GPU timing code, run on the CPU.
    gpu = benchmark.gpu_rtf(models, tracks=2, seconds=0.05, repeats=1, sample_rate=8000, device=torch.device("cpu"))
    assert all(r["forward_ms"] > 0 and r["backward_ms"] > 0 for r in gpu.values())


def test_scaling_worker_in_process_and_in_a_subprocess():
    # The current thread count: changing it in-process can hang later MKL LAPACK
    # calls of the test session (see benchmark.set_torch_threads).
    spec = {"model": "identity", "seconds": 1.0, "threads": torch.get_num_threads(),
            "repeats": 2, "sample_rate": 1000}
    result = benchmark.scaling_worker(spec)
    assert result["seconds"] == 1.0 and len(result["runs_s"]) == 2 and result["peak_mib"] >= 0
    result = benchmark.run_scaling_subprocess({**spec, "keep_freed_memory": True}, timeout=120)
    assert "error" not in result, result
    assert result["method"] == "whole input in one forward pass"
    assert result["page_faults_per_run"] >= 0 and result["system_s_per_run"] >= 0


def test_main_writes_tables_and_json(tiny_models, tmp_path, capsys):
    threads = torch.get_num_threads()  # unchanged: see benchmark.set_torch_threads
    code = benchmark.main([
        "--sections", "params,macs,cpu,gpu", "--repeats", "1", "--tracks", "2",
        "--threads", str(threads), "--out", str(tmp_path),
    ])
    assert code == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "bench.md").read_text() in printed
    machine = record["machine"]
    assert {"cpu_model", "logical_cpus", "threads", "torch", "gpu"} <= set(machine)
    assert machine["threads"] == threads
    assert list(record["models"]) == ["S4M-tiny", "S4M", "Sepformer"]
    for result in record["models"].values():
        assert result["params"] > 0 and result["macs"]["all"] >= result["macs"]["thop"] > 0
        assert result["cpu"]["rtf"] > 0
    assert "MAC counting rule" in record["counting_rule"]
    # Table 4 shape: figures then ratios to Sepformer; Sepformer's ratios are 1.
    header = next(line for line in printed.splitlines() if line.startswith("| model | params"))
    for column in ["params (M)", "MACs thop (G/s)", "MACs all (G/s)", "CPU-RTF-f (s)", "GPU-RTF-f (ms)",
                   "GPU-RTF-b (ms)", "CPU-RTF-f / Sep", "GPU-RTF-b / Sep"]:
        assert f" {column} |" in header
    sepformer_row = next(line for line in printed.splitlines() if line.startswith("| Sepformer | "))
    cells = [c.strip() for c in sepformer_row.strip("|").split("|")]
    assert cells[7:11] == ["1.000"] * 4
    statuses = {t["target"]: t["status"] for t in record["targets"]}
    assert len(statuses) == 5 and set(statuses.values()) <= {"PASS", "MISS", "SKIP"}
    assert any(line.startswith(("PASS: ", "MISS: ")) for line in printed.splitlines())
    if not torch.cuda.is_available():
        assert any("GPU section skipped" in note for note in record["notes"])


def test_scaling_section_and_long_audio_row(tiny_models, monkeypatch):
    specs = []

    def fake_subprocess(spec, timeout=3600.0):
        specs.append(spec)
        seconds = spec["seconds"]
        return {"seconds": seconds, "time_s": 0.1 * seconds, "runs_s": [0.1 * seconds],
                "peak_mib": 10.0 * seconds, "method": "fake"}

    monkeypatch.setattr(benchmark, "run_scaling_subprocess", fake_subprocess)
    args = benchmark.build_parser().parse_args(
        ["--models", "S4M-tiny", "--sections", "scaling", "--lengths", "4,60", "--long-seconds", "600"])
    monkeypatch.setattr(benchmark, "long_audio_available", lambda: False)
    record = benchmark.run(args, log=lambda message: None)
    rows = record["scaling"]["S4M-tiny"]
    assert [r["seconds"] for r in rows] == [4, 60, 600]
    assert rows[-1]["todo"] == "long-audio path not available"
    table = benchmark.scaling_table(record["scaling"])
    assert "long-audio path not available" in table and "| S4M-tiny | 60 | 6.000 | 0.100 | 1.00 | 600 |" in table
    target = record["targets"][-1]
    assert target["status"] == "PASS" and "1.00x linear" in target["detail"]
    # With the long-audio path present, the row is measured through it.
    monkeypatch.setattr(benchmark, "long_audio_available", lambda: True)
    record = benchmark.run(args, log=lambda message: None)
    assert specs[-1]["long_audio"] is True and specs[-1]["seconds"] == 600
    assert "todo" not in record["scaling"]["S4M-tiny"][-1]


def test_targets_pass_and_miss():
    record = {
        "models": {
            "S4M-tiny": {"cpu": {"rtf": 0.1}, "macs": {"thop": 8.2e9, "all": 9e9}},
            "S4M": {"cpu": {"rtf": 0.3}, "macs": {"thop": 20e9, "all": 22e9}},
            "Sepformer": {"cpu": {"rtf": 1.0}},
        },
        "scaling": {"S4M-tiny": [
            {"seconds": 4, "time_s": 1.0, "peak_mib": 100},
            {"seconds": 60, "time_s": 21.0, "peak_mib": 1000},
        ]},
    }
    status = [t["status"] for t in benchmark.check_targets(record)]
    # tiny 10x >= 8 PASS; S4M 3.3x < 4 MISS; tiny MACs +2.5% PASS; S4M -48% MISS;
    # 60 s: 21 s = 1.4x linear MISS.
    assert status == ["PASS", "MISS", "PASS", "MISS", "MISS"]


def test_unknown_model_or_section_is_a_clear_error():
    with pytest.raises(SystemExit, match="unknown model 'Nope'"):
        benchmark.run(benchmark.build_parser().parse_args(["--models", "Nope"]))
    with pytest.raises(SystemExit, match="unknown section 'speed'"):
        benchmark.run(benchmark.build_parser().parse_args(["--sections", "speed"]))


@pytest.mark.parametrize("decoder_s4", [False, True], ids=["tiny", "full"])
def test_timed_fast_path_computes_what_the_counted_reference_path_computes(decoder_s4):
    """CPU timings run the lobes' inference fast paths, MACs are counted on the
    reference operators (reference_implementation): both must compute one function."""
    from speechbrain_s4m.lobes.s4 import reference_implementation

    torch.manual_seed(0)
    masknet = S4MMaskNet(17, bottleneck_channels=16, hidden_channels=32, num_blocks=3, decoder_s4=decoder_s4).eval()
    with torch.no_grad():
        for p in masknet.parameters():
            p.add_(0.1 * torch.randn_like(p))
    for batch, length in [(1, 1), (3, 2), (1, 9), (2, 100), (1, 1001)]:
        x = torch.randn(batch, 17, length)
        with torch.inference_mode():
            fast = masknet(x)
            with reference_implementation():
                reference = masknet(x)
        assert fast.shape == reference.shape
        assert (fast - reference).abs().max() <= 1e-5 * reference.abs().max()
