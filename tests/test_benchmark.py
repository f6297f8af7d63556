"""Tests for the efficiency benchmark (speechbrain_s4m.benchmark, ``s4m-bench``).

Everything runs on tiny models and inputs; no assertion depends on timings.
"""

import json
import math
import statistics

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

    The kernel spectrum is evaluated in closed form at the F = 9 frequencies of the
    convolution's FFT, n = 16. Complex MACs (x 4 real) per channel for the kernel:
      bilinear discretisation 2 * 4^3 / 3 + (4 + 1) * 4^2      = 122.667
      A_bar^8: 3 squarings of a 4 x 4 matrix, 3 * 4^3          = 192
      C A_bar^8 for 2 directions, 2 * 4^2                      = 32
      numerators (4 * 2 + 2) * 4                               = 40
      Cauchy (2 + 1 + 10) * 4 states * 9 frequencies           = 468
      Woodbury 4 * 4 numerator pairs * 9 frequencies           = 144
      truncation term 2 directions * 9 frequencies             = 18
    FFT convolution per channel: rfft(16) + irfft(16) + 4 * 9 = 196 (D is folded
    into the spectrum).
    thop: the 1x1 convolution 2 -> 4 channels on 8 frames = 64.
    """
    kernel_per_channel = 4 * (2 * 4**3 / 3 + 5 * 4**2 + 3 * 4**3 + 2 * 4**2 + 10 * 4 + 13 * 4 * 9 + 4 * 4 * 9 + 2 * 9)
    convolution_per_channel = 2 * 80 + 4 * 9
    torch.manual_seed(0)
    layer = S4(d_model=2, d_state=4, bidirectional=True, mode="dplr")
    macs = benchmark.count_macs(layer, inputs=(torch.randn(1, 2, 8),))
    assert macs["thop"] == 64
    assert math.isclose(macs["s4_kernel_generation"], 2 * kernel_per_channel)
    assert macs["s4_fft_convolution"] == 2 * convolution_per_channel
    assert macs["group_norm"] == 0 and macs["attention"] == 0
    assert math.isclose(macs["all"], 64 + 2 * kernel_per_channel + 2 * convolution_per_channel)
    assert math.isclose(macs["all"], 8589 + 1 / 3)


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
    assert len(statuses) == 6 and set(statuses.values()) <= {"PASS", "MISS", "SKIP"}
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
            "S4M-tiny": {"cpu": {"rtf": 0.1}, "macs": {"thop": 8.2e9, "all": 9e9},
                         "train": {"step_s": 0.2, "audio_s_per_s": 20.0, "batch": 2, "seconds": 2.0, "sample_rate": 8000}},
            "S4M": {"cpu": {"rtf": 0.3}, "macs": {"thop": 20e9, "all": 22e9}},
            "Sepformer": {"cpu": {"rtf": 1.0}, "train": {"step_s": 1.0, "audio_s_per_s": 4.0}},
        },
        "scaling": {"S4M-tiny": [
            {"seconds": 4, "time_s": 1.0, "peak_mib": 100},
            {"seconds": 60, "time_s": 21.0, "peak_mib": 1000},
        ]},
    }
    status = [t["status"] for t in benchmark.check_targets(record)]
    # tiny 10x >= 8 PASS; S4M 3.3x < 4 MISS; training step 5x < 6 MISS; tiny MACs
    # +2.5% PASS; S4M -48% MISS; 60 s: 21 s = 1.4x linear MISS.
    assert status == ["PASS", "MISS", "MISS", "PASS", "MISS", "MISS"]
    training = benchmark.check_targets(record)[2]
    assert training["target"] == "CPU training step: S4M-tiny >= 6x Sepformer"
    assert training["detail"].startswith("5.00x (Sepformer 1.000 s, S4M-tiny 0.200 s per step of 2 x 2 s at 8 kHz)")
    record["models"]["S4M-tiny"]["train"]["step_s"] = 0.1
    assert benchmark.check_targets(record)[2]["status"] == "PASS"


# ------------------------------------------------------------- training section
# The LibriMix recipes' models, small: same YAMLs and code path, fewer layers/channels.
TINY_TRAIN_OVERRIDES = {
    "S4M-tiny": {"num_blocks": 1, "hidden_channels": 16},
    "S4M": {"num_blocks": 1, "hidden_channels": 16},
    "Sepformer": {"num_transformer_layers": 1, "N_encoder_out": 16, "out_channels": 16},
}


def test_training_step_updates_the_recipe_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # loading the hparams must write nothing here
    path = f"{benchmark.RECIPE_HPARAMS_DIR}/{benchmark.RECIPE_HPARAMS['S4M-tiny']}"
    setup = benchmark.load_recipe_model(path, TINY_TRAIN_OVERRIDES["S4M-tiny"])
    assert list(tmp_path.iterdir()) == []
    assert setup.sample_rate == 8000 and setup.num_spks == 2
    assert isinstance(setup.separator.masknet, S4MMaskNet)
    assert benchmark.count_parameters(setup.separator) < 200_000  # the overrides applied (1.8 M without)
    assert isinstance(setup.optimizer, torch.optim.Adam)
    assert setup.optimizer.param_groups[0]["lr"] == 0.001
    mix, sources = benchmark.training_batch(2, 0.05, setup.sample_rate, setup.num_spks)
    before = [p.detach().clone() for p in setup.separator.parameters()]
    loss = benchmark.training_step(setup, mix, sources)
    assert math.isfinite(loss)
    # uPIT SI-SNR: the loss does not depend on the order of the sources.
    with torch.no_grad():
        estimates = setup.separator(mix)
        assert torch.allclose(setup.loss(sources, estimates), setup.loss(sources.flip(-1), estimates))
    after = list(setup.separator.parameters())
    changed = sum(not torch.equal(b, a) for b, a in zip(before, after))
    assert changed >= len(after) // 2, f"only {changed} of {len(after)} parameter tensors changed"
    assert all(p.grad is None for p in after)  # zero_grad(set_to_none=True)


def test_train_section_end_to_end(tmp_path, capsys):
    threads = torch.get_num_threads()  # unchanged: see benchmark.set_torch_threads
    code = benchmark.main([
        "--models", "S4M-tiny,S4M,Sepformer,ConvTasNet", "--sections", "train", "--threads", str(threads),
        "--train-rounds", "2", "--train-seconds", "0.05", "--train-overrides", json.dumps(TINY_TRAIN_OVERRIDES),
        "--out", str(tmp_path),
    ])
    assert code == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "bench.json").read_text())
    assert record["settings"]["train_rounds"] == 2 and record["settings"]["train_overrides"] == TINY_TRAIN_OVERRIDES
    for name in ["S4M-tiny", "S4M", "Sepformer"]:
        train = record["models"][name]["train"]
        assert train["batch"] == 2 and train["seconds"] == 0.05 and train["sample_rate"] == 8000
        assert train["hparams_file"].endswith(benchmark.RECIPE_HPARAMS[name])
        assert len(train["rounds_s"]) == 2 and train["step_s"] == pytest.approx(statistics.median(train["rounds_s"]))
        assert len(train["losses"]) == 2 and all(math.isfinite(v) for v in train["losses"])
        assert train["audio_s_per_s"] == pytest.approx(2 * 0.05 / train["step_s"])
        sep = record["models"]["Sepformer"]["train"]["step_s"]
        assert train["sepformer_over_model"] == pytest.approx(sep / train["step_s"])
        assert train["params"] > 0
    # Both S4M models: one unfolded pass of 16 hidden channels; S4M adds decoder S4 layers.
    assert record["models"]["S4M"]["train"]["params"] > record["models"]["S4M-tiny"]["train"]["params"]
    assert "train" not in record["models"]["ConvTasNet"]
    assert any("ConvTasNet left out" in note for note in record["notes"])
    assert "## CPU training step" in printed
    header = next(line for line in printed.splitlines() if line.startswith("| model | hparams |"))
    assert " step (s) | audio s / s | Sep / model (step time) |" in header
    sepformer_row = next(line for line in printed.splitlines() if line.startswith("| Sepformer | sepformer.yaml |"))
    assert "| 1.00 |" in sepformer_row
    target = next(t for t in record["targets"] if t["target"].startswith("CPU training step"))
    assert target["status"] in ("PASS", "MISS") and "per step of 2 x 0.05 s at 8 kHz" in target["detail"]
    assert any(line.startswith(f"{target['status']}: CPU training step: S4M-tiny >= 6x Sepformer: ")
               for line in printed.splitlines())


def test_train_section_rejects_bad_overrides():
    parse = benchmark.build_parser().parse_args
    with pytest.raises(SystemExit, match="Override 'no_such_key' not found"):
        benchmark.run(parse(["--models", "S4M-tiny", "--sections", "train",
                             "--train-overrides", '{"S4M-tiny": {"no_such_key": 1}}']), log=lambda m: None)
    with pytest.raises(SystemExit, match="without a recipe: \\['ConvTasNet'\\]"):
        benchmark.run(parse(["--models", "S4M-tiny", "--sections", "train",
                             "--train-overrides", '{"ConvTasNet": {"N": 1}}']), log=lambda m: None)


def test_unknown_model_or_section_is_a_clear_error():
    with pytest.raises(SystemExit, match="unknown model 'Nope'"):
        benchmark.run(benchmark.build_parser().parse_args(["--models", "Nope"]))
    with pytest.raises(SystemExit, match="unknown section 'speed'"):
        benchmark.run(benchmark.build_parser().parse_args(["--sections", "speed"]))
