"""Tests for the efficiency benchmark (speechbrain_s4m.benchmark, ``s4m-bench``).

Everything runs on tiny models (the recipe YAMLs with fewer layers and channels) and
tiny inputs; no assertion depends on timings.
"""

import json
import math
import re
import statistics

import pytest
import torch
from torch import nn

from speechbrain_s4m.benchmark import cli, macs, models, report, scaling, timing
from speechbrain_s4m.benchmark.scaling import ScalingSpec
from speechbrain_s4m.cli import EXIT_USAGE
from speechbrain_s4m.lobes import S4, S4MMaskNet, WaveformEncoder

# The recipes' models, small: same YAMLs and code path, fewer layers and channels.
TINY_OVERRIDES = {
    "S4M-tiny": {"num_blocks": 1, "hidden_channels": 16},
    "S4M": {"num_blocks": 1, "hidden_channels": 16},
    "Sepformer": {"num_transformer_layers": 1, "N_encoder_out": 16, "out_channels": 16},
}


def tiny_model(name: str, sample_rate: int = models.SAMPLE_RATE) -> nn.Module:
    return models.build_model(name, sample_rate, TINY_OVERRIDES[name])


# ------------------------------------------------------------------ MAC counting
def test_fft_rule():
    assert macs.rfft_macs(16) == 1.25 * 16 * 4
    assert macs.rfft_macs(1) == 0.0


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
    counted = macs.count_macs(layer, inputs=(torch.randn(1, 2, 8),))
    assert counted["thop"] == 64
    assert math.isclose(counted["s4_kernel_generation"], 2 * kernel_per_channel)
    assert counted["s4_fft_convolution"] == 2 * convolution_per_channel
    assert counted["group_norm"] == 0 and counted["attention"] == 0
    assert math.isclose(counted["all"], 64 + 2 * kernel_per_channel + 2 * convolution_per_channel)
    assert math.isclose(counted["all"], 8589 + 1 / 3)


def test_s4_kernels_are_counted_once_per_masknet_forward():
    masknet = S4MMaskNet(9, bottleneck_channels=8, hidden_channels=16, num_blocks=3, decoder_s4=True)
    L = 40
    counted = macs.count_macs(masknet, inputs=(torch.randn(1, 9, L),))
    lengths = masknet.block.scale_lengths(L)
    layers = [masknet.block.global_s4.s4] + [m.s4 for m in masknet.block.decoder_s4]
    expected = macs.s4_kernel_macs(layers[0], lengths[-1]) + sum(
        macs.s4_kernel_macs(layer, length) for layer, length in zip(layers[1:], lengths[:-1])
    )
    assert math.isclose(counted["s4_kernel_generation"], expected)
    # ... while the FFT convolutions run in every one of the 3 unfolded passes.
    per_pass = macs.s4_convolution_macs(layers[0], 1, lengths[-1]) + sum(
        macs.s4_convolution_macs(layer, 1, length) for layer, length in zip(layers[1:], lengths[:-1])
    )
    assert math.isclose(counted["s4_fft_convolution"], 3 * per_pass)
    assert counted["group_norm"] > 0


def test_thop_counts_subclassed_convolutions_and_attention_is_added():
    encoder = WaveformEncoder(16)  # an nn.Conv1d subclass taking [batch, time]
    counted = macs.count_macs(encoder, inputs=(torch.randn(1, 100),))
    frames = encoder.num_frames(100)
    assert counted["thop"] == frames * 9 * 16  # output elements x C_in x kernel
    mha = nn.MultiheadAttention(8, 2)
    query = torch.randn(5, 1, 8)

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x)[0]

    counted = macs.count_macs(SelfAttention(), inputs=(query,))
    assert counted["attention"] == (5 + 10 + 5) * 64 + 2 * 5 * 5 * 8


def test_counting_leaves_no_hooks_or_patches_behind():
    model = tiny_model("S4M", 8000)
    macs.count_macs(model, seconds=0.05, sample_rate=8000)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert "kernel_spectrum" not in vars(module)
        assert "total_ops" not in module._buffers


# ---------------------------------------------------------------------- models
def test_build_model_reads_the_recipe_yaml_with_overrides():
    model = tiny_model("S4M")
    assert isinstance(model.masknet, S4MMaskNet) and not model.training
    assert model.encoder.kernel_size == (64,)  # 4 ms at 16 kHz, from the YAML
    assert model.masknet.block.decoder_s4 and not tiny_model("S4M-tiny").masknet.block.decoder_s4
    # hidden_channels 16 instead of 512: the overrides applied.
    assert (
        models.count_parameters(model)
        < models.count_parameters(models.build_model("S4M", overrides={"num_blocks": 1})) / 10
    )
    with pytest.raises(ValueError, match="unknown model 'ConvTasNet'"):
        models.build_model("ConvTasNet")
    with pytest.raises(ValueError, match="Override 'no_such_key' not found"):
        models.build_model("S4M", overrides={"no_such_key": 1})


# ---------------------------------------------------------------------- sections
def test_timing_functions_on_a_tiny_model():
    tiny = {"S4M-tiny": tiny_model("S4M-tiny", 8000), "Sepformer": tiny_model("Sepformer", 8000)}
    cpu = timing.cpu_rtf(tiny, tracks=2, seconds=0.05, repeats=2, sample_rate=8000)
    assert set(cpu) == set(tiny)
    assert all(len(r["rounds"]) == 2 and r["rtf"] > 0 for r in cpu.values())
    # The GPU timing code, run on the CPU.
    gpu = timing.gpu_rtf(tiny, tracks=2, seconds=0.05, repeats=1, sample_rate=8000, device=torch.device("cpu"))
    assert all(r["forward_ms"] > 0 and r["backward_ms"] > 0 for r in gpu.values())


def test_scaling_spec_travels_as_json():
    spec = ScalingSpec(
        model="S4M-tiny",
        seconds=4,
        threads=2,
        long_audio=True,
        memory_limit_gib=3,
        overrides=TINY_OVERRIDES["S4M-tiny"],
    )
    back = ScalingSpec.from_json(spec.to_json())
    assert back == spec and back.seconds == 4.0 and isinstance(back.memory_limit_gib, float)
    assert json.loads(spec.to_json())["overrides"] == TINY_OVERRIDES["S4M-tiny"]
    with pytest.raises(ValueError, match=r"unknown fields \['speed'\]"):
        ScalingSpec.from_json(json.dumps({**json.loads(spec.to_json()), "speed": 1}))
    assert cli.main(["--worker", '{"model": "S4M", "seconds": 1, "threads": 1, "speed": 1}']) == EXIT_USAGE


@pytest.mark.slow  # spawns a process
def test_scaling_worker_in_process_and_in_a_subprocess():
    # The current thread count: changing it in-process can hang later MKL LAPACK
    # calls of the test session (see timing.set_torch_threads).
    spec = ScalingSpec(
        model=scaling.IDENTITY, seconds=1.0, threads=torch.get_num_threads(), repeats=2, sample_rate=1000
    )
    result = scaling.scaling_worker(spec)
    assert result["seconds"] == 1.0 and len(result["runs_s"]) == 2 and result["peak_mib"] >= 0
    spec.keep_freed_memory = True
    result = scaling.run_scaling_subprocess(spec, timeout=120)
    assert "error" not in result, result
    assert result["method"] == "whole input in one forward pass"
    assert result["page_faults_per_run"] >= 0 and result["system_s_per_run"] >= 0


def test_scaling_worker_on_a_recipe_model_and_the_long_audio_path():
    threads = torch.get_num_threads()
    spec = ScalingSpec(model="S4M-tiny", seconds=0.5, threads=threads, repeats=2, overrides=TINY_OVERRIDES["S4M-tiny"])
    result = scaling.scaling_worker(spec)
    assert len(result["runs_s"]) == 2 and result["method"] == "whole input in one forward pass"
    spec = ScalingSpec(
        model="S4M-tiny",
        seconds=0.5,
        threads=threads,
        long_audio=True,
        chunk_s=0.2,
        overlap_s=0.05,
        overrides=TINY_OVERRIDES["S4M-tiny"],
    )
    result = scaling.scaling_worker(spec)
    assert len(result["runs_s"]) == 1 and result["method"] == "separate_in_chunks, 0.2 s chunks, 0.05 s overlap"


@pytest.mark.slow  # every section, tiny models
def test_main_writes_tables_and_json(tmp_path, capsys):
    threads = torch.get_num_threads()  # unchanged: see timing.set_torch_threads
    options = f"--sections params,macs,cpu,gpu --repeats 1 --tracks 2 --threads {threads}".split()
    code = cli.main(options + ["--model-overrides", json.dumps(TINY_OVERRIDES), "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "bench.md").read_text() in printed
    machine = record["machine"]
    assert {"cpu_model", "logical_cpus", "threads", "torch", "gpu"} <= set(machine)
    assert machine["threads"] == threads
    assert record["settings"]["model_overrides"] == TINY_OVERRIDES
    assert list(record["models"]) == ["S4M-tiny", "S4M", "Sepformer"]
    for name, result in record["models"].items():
        assert result["params"] == models.count_parameters(tiny_model(name))
        assert result["macs"]["all"] >= result["macs"]["thop"] > 0
        assert result["cpu"]["rtf"] > 0
    assert "MAC counting rule" in record["counting_rule"]
    # Table 4 shape: figures then ratios to Sepformer; Sepformer's ratios are 1.
    header = next(line for line in printed.splitlines() if line.startswith("| model | params"))
    for column in [
        "params (M)",
        "MACs thop (G/s)",
        "MACs all (G/s)",
        "CPU-RTF-f (s)",
        "GPU-RTF-f (ms)",
        "GPU-RTF-b (ms)",
        "CPU-RTF-f / Sep",
        "GPU-RTF-b / Sep",
    ]:
        assert f" {column} |" in header
    sepformer_row = next(line for line in printed.splitlines() if line.startswith("| Sepformer | "))
    cells = [c.strip() for c in sepformer_row.strip("|").split("|")]
    assert cells[7:11] == ["1.000"] * 4
    statuses = {t["target"]: t["status"] for t in record["targets"]}
    assert len(statuses) == 9 and set(statuses.values()) <= {"PASS", "MISS", "SKIP"}
    assert any(line.startswith(("PASS: ", "MISS: ")) for line in printed.splitlines())
    if not torch.cuda.is_available():
        assert any("GPU section skipped" in note for note in record["notes"])


def test_scaling_section_and_long_audio_row(monkeypatch):
    threads = torch.get_num_threads()  # unchanged: see timing.set_torch_threads
    specs = []

    def fake_subprocess(spec, timeout=3600.0):
        specs.append(spec)
        seconds = spec.seconds
        return {
            "seconds": seconds,
            "time_s": 0.1 * seconds,
            "runs_s": [0.1 * seconds],
            "peak_mib": 10.0 * seconds,
            "method": "separate_in_chunks" if spec.long_audio else "fake",
        }

    monkeypatch.setattr(scaling, "run_scaling_subprocess", fake_subprocess)
    args = cli.build_parser().parse_args(
        [
            "--models",
            "S4M-tiny",
            "--sections",
            "scaling",
            "--lengths",
            "4,60",
            "--long-seconds",
            "600",
            "--threads",
            str(threads),
            "--scaling-repeats",
            "2",
            "--max-memory-gib",
            "5",
            "--model-overrides",
            json.dumps({"S4M-tiny": TINY_OVERRIDES["S4M-tiny"]}),
        ]
    )
    record = cli.run(args, log=lambda message: None)
    rows = record["scaling"]["S4M-tiny"]
    assert [r["seconds"] for r in rows] == [4, 60, 600]
    assert [s.long_audio for s in specs] == [False, False, True] and rows[-1]["long_audio"] is True
    assert all(s.threads == threads and s.memory_limit_gib == 5 and s.sample_rate == models.SAMPLE_RATE for s in specs)
    assert all(s.overrides == TINY_OVERRIDES["S4M-tiny"] for s in specs)
    assert [s.repeats for s in specs[:2]] == [2, 2]
    table = report.scaling_table(record["scaling"])
    assert "| S4M-tiny | 60 | 6.000 | 0.100 | 1.00 | 600 |" in table
    assert "| S4M-tiny (long-audio path) | 600 | 60.000 | 0.100 | - | 6000 |" in table
    target = next(t for t in record["targets"] if t["target"].startswith("S4M-tiny 60 s on CPU"))
    assert target["status"] == "PASS" and "1.00x linear" in target["detail"]
    # --long-seconds 0: no long-audio row.
    specs.clear()
    args.long_seconds = 0.0
    assert [r["seconds"] for r in cli.run(args, log=lambda message: None)["scaling"]["S4M-tiny"]] == [4, 60]
    assert not any(s.long_audio for s in specs)


def test_targets_pass_and_miss():
    record = {
        "models": {
            "S4M-tiny": {
                "cpu": {"rtf": 0.1},
                "macs": {"thop": 8.2e9, "all": 9e9},
                "train": {"step_s": 0.2, "audio_s_per_s": 20.0, "batch": 2, "seconds": 2.0, "sample_rate": 8000},
            },
            "S4M": {"cpu": {"rtf": 0.3}, "macs": {"thop": 20e9, "all": 22e9}},
            "Sepformer": {"cpu": {"rtf": 1.0}, "train": {"step_s": 1.0, "audio_s_per_s": 4.0}},
        },
        "scaling": {
            "S4M-tiny": [
                {"seconds": 4, "time_s": 1.0, "peak_mib": 100},
                {"seconds": 60, "time_s": 21.0, "peak_mib": 1000},
            ]
        },
    }
    status = [t["status"] for t in report.check_targets(record)]
    # tiny 10x >= 8 PASS; S4M 3.3x < 4 MISS; training step 5x < 6 MISS; tiny MACs
    # +2.5% PASS; S4M -48% MISS; 60 s: 21 s = 1.4x linear MISS; no streaming rows.
    assert status == ["PASS", "MISS", "MISS", "PASS", "MISS", "MISS", "SKIP", "SKIP", "SKIP"]
    row = {"threads": 1, "median_ms": 3.0, "latency_samples": 87, "latency_ms": 10.875}
    record["streaming"] = {
        "S4M-tiny causal": {
            "rows": [
                row | {"chunk_ms": 8, "p99_ms": 9.0, "rtf": 1.0},
                row | {"chunk_ms": 16, "p99_ms": 13.0, "rtf": 0.2},
                row | {"chunk_ms": 64, "p99_ms": 9.0, "rtf": 0.25},
            ]
        },
        "S4M-tiny causal, compiled": {"rows": [row | {"chunk_ms": 8, "p99_ms": 7.5, "rtf": 0.9}]},
    }
    # 8 ms: the compiled stream's p99 7.5 < 8 PASS; 16 ms: 13 >= 12 MISS; 64 ms: RTF 0.25 PASS
    assert [t["status"] for t in report.check_targets(record)][-3:] == ["PASS", "MISS", "PASS"]
    # the compiled section: S4M-tiny 0.1 / 0.02 = 5x its eager (PASS), 50x Sepformer (PASS); S4M 3.3x MISS
    record["compiled"] = {
        "rows": {
            "S4M-tiny": {"eager_rtf": 0.1, "compiled_rtf": 0.02},
            "S4M": {"eager_rtf": 0.5, "compiled_rtf": 0.3},
            "Sepformer": {"eager_rtf": 1.0, "compiled_rtf": 0.4},
        }
    }
    compiled = report.check_targets(record)[-6:-3]
    assert [t["status"] for t in compiled] == ["PASS", "PASS", "MISS"]
    assert compiled[0]["detail"].endswith("50.0x (against compiled Sepformer: 20.0x)"), compiled[0]
    training = report.check_targets(record)[2]
    assert training["target"] == "CPU training step: S4M-tiny >= 6x Sepformer"
    assert training["detail"].startswith("5.00x (Sepformer 1.000 s, S4M-tiny 0.200 s per step of 2 x 2 s at 8 kHz)")
    record["models"]["S4M-tiny"]["train"]["step_s"] = 0.1
    assert report.check_targets(record)[2]["status"] == "PASS"


# ------------------------------------------------------------ streaming section
def test_streaming_section_end_to_end(tmp_path, capsys):
    threads = torch.get_num_threads()
    tiny = {"num_blocks": 1, "hidden_channels": 16}
    options = ["--sections", "streaming", "--threads", str(threads), "--stream-models", "S4M-tiny causal"]
    options += ["--stream-chunks-ms", "8,64", "--stream-threads", str(threads), "--stream-seconds", "1"]
    options += ["--stream-memory-minutes", "1", "--model-overrides", json.dumps({"S4M-tiny causal": tiny})]
    assert cli.main(options + ["--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "bench.json").read_text())
    rows = record["streaming"]["S4M-tiny causal"]["rows"]
    assert [(r["threads"], r["chunk_ms"]) for r in rows] == [(threads, 8.0), (threads, 64.0)]
    assert rows[0]["chunks"] == 125 and rows[1]["chunks"] == 16  # 1 s at 8 kHz
    for row in rows:
        assert 0 < row["median_ms"] <= row["p99_ms"] and row["rtf"] > 0 and row["latency_samples"] == 87
    assert record["streaming"]["S4M-tiny causal"]["memory"]["minutes"] == 1
    assert "| S4M-tiny causal | " in printed and "algorithmic latency (samples)" in printed


@pytest.mark.slow
def test_onnx_section_end_to_end(tmp_path, capsys):
    """s4m-bench --sections onnx: the offline graph's CPU-RTF-f beside eager's, and a
    stream step, from one run; Sepformer is not exported. The test process's torch
    thread pool is left as it is (changing it back and forth can hang later work)."""
    threads = torch.get_num_threads()
    tiny = {"num_blocks": 1, "hidden_channels": 16}
    overrides = {"S4M-tiny": tiny, "S4M-tiny causal": tiny}
    options = ["--sections", "onnx", "--models", "S4M-tiny", "--threads", str(threads), "--tracks", "2"]
    options += ["--repeats", "1", "--stream-models", "S4M-tiny causal", "--onnx-chunks-ms", "16"]
    assert cli.main(options + ["--model-overrides", json.dumps(overrides), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    section = json.loads((tmp_path / "bench.json").read_text())["onnx"]
    offline = section["offline"]["S4M-tiny"]
    assert offline["parity"] < 1e-4 and offline["eager_rtf"] > 0 and offline["onnx_rtf"] > 0
    assert offline["speedup"] == pytest.approx(offline["eager_rtf"] / offline["onnx_rtf"])
    (step,) = section["stream"]["S4M-tiny causal"]
    assert step["step_ms"] == 16 and step["parity"] < 1e-4 and step["onnx_median_ms"] > 0
    assert "| S4M-tiny | CPU-RTF-f, 1 s tracks |" in printed and "stream step of 16 ms" in printed
    assert "onnxruntime >= 1.5x faster than PyTorch eager" in printed


# ------------------------------------------------------------- training section
def test_training_step_updates_the_recipe_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # loading the hparams must write nothing here
    path = models.recipe_hparams_file("S4M-tiny", models.TRAIN_HPARAMS_DIR)
    setup = models.load_recipe_model(path, TINY_OVERRIDES["S4M-tiny"])
    assert list(tmp_path.iterdir()) == []
    assert setup.sample_rate == 8000 and setup.num_spks == 2
    assert isinstance(setup.separator.masknet, S4MMaskNet)
    assert models.count_parameters(setup.separator) < 200_000  # the overrides applied (1.8 M without)
    assert isinstance(setup.optimizer, torch.optim.Adam)
    assert setup.optimizer.param_groups[0]["lr"] == 0.001
    mix, sources = timing.training_batch(2, 0.05, setup.sample_rate, setup.num_spks)
    before = [p.detach().clone() for p in setup.separator.parameters()]
    loss = timing.training_step(setup, mix, sources)
    assert math.isfinite(loss)
    # uPIT SI-SNR: the loss does not depend on the order of the sources.
    with torch.no_grad():
        estimates = setup.separator(mix)
        assert torch.allclose(setup.loss(sources, estimates), setup.loss(sources.flip(-1), estimates))
    after = list(setup.separator.parameters())
    changed = sum(not torch.equal(b, a) for b, a in zip(before, after))
    assert changed >= len(after) // 2, f"only {changed} of {len(after)} parameter tensors changed"
    assert all(p.grad is None for p in after)  # zero_grad(set_to_none=True)


@pytest.mark.slow  # trains three recipe models
def test_train_section_end_to_end(tmp_path, capsys):
    threads = torch.get_num_threads()  # unchanged: see timing.set_torch_threads
    options = f"--models S4M-tiny,S4M,Sepformer --sections train --threads {threads} --train-rounds 2".split()
    options += ["--train-seconds", "0.05", "--train-overrides", json.dumps(TINY_OVERRIDES), "--out", str(tmp_path)]
    code = cli.main(options)
    assert code == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "bench.json").read_text())
    assert record["settings"]["train_rounds"] == 2 and record["settings"]["train_overrides"] == TINY_OVERRIDES
    for name in ["S4M-tiny", "S4M", "Sepformer"]:
        train = record["models"][name]["train"]
        assert train["batch"] == 2 and train["seconds"] == 0.05 and train["sample_rate"] == 8000
        assert train["hparams_file"] == models.recipe_hparams_file(name, models.TRAIN_HPARAMS_DIR)
        assert len(train["rounds_s"]) == 2 and train["step_s"] == pytest.approx(statistics.median(train["rounds_s"]))
        assert len(train["losses"]) == 2 and all(math.isfinite(v) for v in train["losses"])
        assert train["audio_s_per_s"] == pytest.approx(2 * 0.05 / train["step_s"])
        sep = record["models"]["Sepformer"]["train"]["step_s"]
        assert train["sepformer_over_model"] == pytest.approx(sep / train["step_s"])
        assert train["params"] > 0
    # Both S4M models: one unfolded pass of 16 hidden channels; S4M adds decoder S4 layers.
    assert record["models"]["S4M"]["train"]["params"] > record["models"]["S4M-tiny"]["train"]["params"]
    assert "## CPU training step" in printed
    header = next(line for line in printed.splitlines() if line.startswith("| model | hparams |"))
    assert " step (s) | audio s / s | Sep / model (step time) |" in header
    sepformer_row = next(line for line in printed.splitlines() if line.startswith("| Sepformer | sepformer.yaml |"))
    assert "| 1.00 |" in sepformer_row
    target = next(t for t in record["targets"] if t["target"].startswith("CPU training step"))
    assert target["status"] in ("PASS", "MISS") and "per step of 2 x 0.05 s at 8 kHz" in target["detail"]
    assert any(
        line.startswith(f"{target['status']}: CPU training step: S4M-tiny >= 6x Sepformer: ")
        for line in printed.splitlines()
    )


# --------------------------------------------------------------- usage errors
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "Nope"], "unknown model 'Nope'; choose from ['Conv-TasNet', 'Conv-TasNet causal', 'DPRNN'"),
        (["--models", "S4M", "--scaling-models", "ConvTasNet"], "unknown model 'ConvTasNet'"),
        (["--sections", "speed"], "unknown section 'speed'; choose from params,macs,cpu,gpu,train,scaling,streaming"),
        (["--sections", "params,mac"], "unknown section 'mac'"),
        (
            ["--models", "S4M-tiny", "--sections", "train", "--train-overrides", '{"S4M-tiny": {"no_such_key": 1}}'],
            "Override 'no_such_key' not found",
        ),
        (
            ["--models", "S4M-tiny", "--sections", "train", "--train-overrides", '{"ConvTasNet": {"N": 1}}'],
            "training overrides for models without a recipe: ['ConvTasNet']",
        ),
        (
            ["--models", "S4M-tiny", "--sections", "train", "--train-hparams-dir", "/nonexistent"],
            "recipe hparams not found: /nonexistent/s4m_tiny.yaml",
        ),
        (
            ["--models", "S4M-tiny", "--sections", "params", "--model-overrides", '{"S4M-tiny": {"no_such_key": 1}}'],
            "Override 'no_such_key' not found",
        ),
        (["--sections", "params", "--model-overrides", '{"S4M-tiny": 1}'], "model overrides: expected"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(argv, message, tmp_path, capsys):
    assert cli.main(argv + ["--out", str(tmp_path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("s4m-bench: error: ") and message in err
    assert list(tmp_path.iterdir()) == []  # nothing written
    with pytest.raises(cli.UsageError, match=re.escape(message)):
        cli.run(cli.build_parser().parse_args(argv), log=lambda m: None)


def test_unknown_model_exits_2():
    assert cli.main(["--models", "Nope"]) == EXIT_USAGE


def test_help_states_the_counting_rule_and_the_exit_statuses(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--help"])
    assert stop.value.code == 0
    printed = capsys.readouterr().out
    assert "MAC counting rule" in printed and "exit status: 0 success" in printed


def test_all_models_in_one_run(tmp_path, capsys):
    """``--models all``: every recipe model, SpeechBrain's separators included, has its
    row of parameters and MACs from one run (full size: building and counting only)."""
    assert cli.main(["--models", "all", "--sections", "params,macs", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "bench.json").read_text())
    assert list(record["models"]) == list(models.RECIPE_HPARAMS)
    for name in ["Conv-TasNet", "Conv-TasNet causal", "DPRNN", "SkiM", "SkiM causal", "RE-SepFormer"]:
        result = record["models"][name]
        assert result["params"] > 1e6 and result["macs"]["thop"] > 1e9, (name, result)
        assert any(line.startswith(f"| {name} | ") for line in printed.splitlines())
    assert record["models"]["DPRNN"]["macs"]["thop"] > record["models"]["SkiM"]["macs"]["thop"]  # LSTMs counted
