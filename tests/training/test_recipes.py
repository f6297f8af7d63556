"""End-to-end tests of the three recipes with every hparams file, on tiny datasets in
each layout (real speech from ../shared/data when present, generated otherwise).

Each run is the real command line (`python train.py hparams/X.yaml --debug ...`); the
overrides only make the models and data small.
"""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny_datasets import (
    make_librimix,
    make_librispeech_folder,
    make_lrs2mix,
    make_wsj0_speaker_folder,
    make_wsj0mix,
)
from tiny_runs import SMALL

from speechbrain_s4m.training.curves import read_training_curve

pytestmark = pytest.mark.slow  # trains recipes (see tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
RECIPES = {"WSJ0Mix": make_wsj0mix, "LibriMix": make_librimix, "LRS2Mix": make_lrs2mix}
HPARAMS = ["s4m", "s4m_tiny", "sepformer", "conv_tasnet", "dprnn", "skim", "resepformer"]
# trained end to end in the LibriMix recipe only
CAUSAL_HPARAMS = ["s4m_causal", "s4m_tiny_causal", "conv_tasnet_causal", "skim_causal"]
S4M_CAUSAL = ["s4m_causal", "s4m_tiny_causal"]  # the offline model's Model section plus causal: True
MODEL_MARKER = "# ###################################################################### Model"
COMMON_MARKER = "# ################################################################# Experiment"


def train_command(recipe, hparams, data_folder, output_folder, *extra):
    folder = REPO / "recipes" / recipe / "separation"
    return [
        sys.executable,
        str(folder / "train.py"),
        str(folder / "hparams" / f"{hparams}.yaml"),
        f"--data_folder={data_folder}",
        f"--output_folder={output_folder}",
        "--device=cpu",
        "--num_workers=0",
        "--noprogressbar",
        *SMALL[hparams],
        *extra,
    ]


def run(command, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def read_results(output_folder):
    with open(Path(output_folder) / "test_results.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    return {name: make(root / name) for name, make in RECIPES.items()}


@pytest.mark.parametrize("recipe", RECIPES)
def test_hparams_files_differ_only_in_the_model_section(recipe):
    folder = REPO / "recipes" / recipe / "separation" / "hparams"
    commons, models = [], {}
    for name in HPARAMS + CAUSAL_HPARAMS:
        text = (folder / f"{name}.yaml").read_text()
        header_and_model, common = text.split(COMMON_MARKER)
        commons.append(common)
        models[name] = header_and_model.split(MODEL_MARKER)[1]
    assert all(common == commons[0] for common in commons)
    assert len(set(models.values())) == len(models)
    for name in S4M_CAUSAL:  # the offline model's section plus causal: True
        offline = models[name.replace("_causal", "")].splitlines()
        causal = models[name].splitlines()
        assert [line for line in causal if line not in offline] == [
            f"backbone: {name}",
            "    causal: True  # chunk-causal: unidirectional S4, per-frame norms, left-padded convs",
        ]


@pytest.mark.parametrize(
    "recipe, hparams",
    [(recipe, hparams) for recipe in RECIPES for hparams in HPARAMS] + [("LibriMix", h) for h in CAUSAL_HPARAMS],
)
def test_recipe_runs_end_to_end(recipe, hparams, datasets, tmp_path):
    out = tmp_path / "out"
    run(train_command(recipe, hparams, datasets[recipe], out, "--debug"))
    rows = read_results(out)
    assert [r["snt_id"] for r in rows][-1] == "avg"
    assert len(rows) >= 2
    for row in rows:
        for key in ["sdr", "sdr_i", "si-snr", "si-snr_i"]:
            float(row[key])  # a number (NaN would still parse: check finiteness)
            assert row[key].lower() not in ("nan", "inf", "-inf"), row
    curve = read_training_curve(out / "train_log.txt")
    assert len(curve) >= 1
    for point in curve:  # the Brain's training statistics, logged with every epoch
        assert point["audio_s_per_s"] > 0 and point["peak_mem_GB"] > 0.05 and point["minutes"] >= 0


def test_missing_data_folder_stops_before_any_model_is_built(tmp_path):
    missing = tmp_path / "nowhere"
    command = train_command("LibriMix", "s4m", missing, tmp_path / "out")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode != 0
    assert str(missing) in result.stderr
    assert not (tmp_path / "out" / "save" / "train.csv").exists()
    assert "Dual_Path_Model" not in result.stderr and "S4MMaskNet" not in result.stderr


def test_dynamic_mixing_trains_from_a_speaker_folder(datasets, tmp_path):
    speakers = make_wsj0_speaker_folder(tmp_path / "si_tr_s")
    out = tmp_path / "out"
    run(
        train_command(
            "WSJ0Mix",
            "s4m_tiny",
            datasets["WSJ0Mix"],
            out,
            "--debug",
            "--dynamic_mixing=True",
            f"--base_folder_dm={speakers}",
            "--dm_examples_per_epoch=2",
            "--limit_training_signal_len=True",
            "--training_signal_len=4000",
        )
    )
    assert read_results(out)[-1]["snt_id"] == "avg"


def _brain_state(save_folder):
    """(epoch counter, optimizer steps) of the newest checkpoint."""
    complete = [p for p in Path(save_folder).glob("CKPT+*") if (p / "dataloader-TRAIN.ckpt").is_file()]
    if not complete:
        return None
    newest = max(complete, key=lambda p: p.name)
    try:
        brain = yaml.safe_load((newest / "brain.ckpt").read_text())
        counter = yaml.safe_load((newest / "counter.ckpt").read_text())
        meta = (newest / "CKPT.yaml").read_text()
    except FileNotFoundError:  # deleted by the checkpointer meanwhile
        return None
    return counter["current_epoch"], brain["optimizer_step"], "brain_intra_epoch_ckpt" in meta


def test_killed_training_resumes_without_losing_or_repeating_an_epoch(tmp_path):
    out = tmp_path / "out"
    data = make_librimix(tmp_path / "data", n_train=24, with_noise=False)
    command = train_command(
        "LibriMix",
        "s4m_tiny",
        data,
        out,
        "--N_epochs=2",
        "--ckpt_interval_minutes=0",
        "--ckpt_interval_steps=1",
        "--use_speedperturb=False",
        "--sorting=none",
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    state = None
    while time.time() < deadline and process.poll() is None:
        state = _brain_state(out / "save")
        if state is not None and state[2] and state[1] >= 2:
            break  # an intra-epoch checkpoint, after at least two steps
        time.sleep(0.02)
    assert process.poll() is None, "training ended before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "test_results.csv").exists()

    run(command)
    log = (out / "train_log.txt").read_text()
    assert log.count("epoch: 1,") == 1 and log.count("epoch: 2,") == 1, log
    n_train = sum(1 for _ in open(out / "save" / "train.csv")) - 1
    epoch, steps, _ = _brain_state(out / "save")
    assert epoch == 2
    assert steps == 2 * n_train  # every batch of both epochs exactly once
    assert read_results(out)[-1]["snt_id"] == "avg"


def test_two_process_debug_run_finishes(datasets, tmp_path):
    # SpeechBrain gives each process its own temporary checkpoint folder under
    # --debug; without one shared folder, the ranks waited in different collectives
    # for ever after the second epoch (speechbrain_compat.share_debug_checkpoints_dir).
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29562",
        *train_command("LibriMix", "s4m_tiny", datasets["LibriMix"], out, "--debug", "--distributed_backend=gloo")[1:],
    ]
    run(command, timeout=300)
    assert (out / "train_log.txt").read_text().count("epoch: 2,") == 1
    assert read_results(out)[-1]["snt_id"] == "avg"


def test_long_test_mixtures_are_separated_in_chunks(datasets, tmp_path):
    # 1 s test mixtures with 0.4 s chunks: the chunked path scores every utterance.
    out = tmp_path / "out"
    run(
        train_command(
            "LRS2Mix",
            "s4m_tiny",
            datasets["LRS2Mix"],
            out,
            "--debug",
            "--eval_chunk_seconds=0.4",
            "--eval_overlap_seconds=0.1",
        )
    )
    rows = read_results(out)
    assert rows[-1]["snt_id"] == "avg" and len(rows) == 3


@pytest.mark.parametrize(
    "budget, steps",
    [
        (["--max_train_minutes=0.0001"], 1),  # wall clock: stops after the first step
        # SpeechBrain's run option, which its parser leaves a string
        (["--optimizer_step_limit=3", "--batch_size=1"], 3),
    ],
)
def test_training_budget_stops_training(datasets, tmp_path, budget, steps):
    out = tmp_path / "out"
    run(train_command("WSJ0Mix", "s4m_tiny", datasets["WSJ0Mix"], out, "--N_epochs=50", *budget))
    log = (out / "train_log.txt").read_text()
    assert log.count("epoch: ") == 1, log  # stopped in epoch 1, then validated
    assert _brain_state(out / "save")[:2] == (1, steps)
    assert read_results(out)[-1]["snt_id"] == "avg"


def test_optimizer_step_limit_must_be_a_whole_number(tmp_path):
    from speechbrain_s4m.training.recipe import parse_arguments

    yaml_path = REPO / "recipes" / "WSJ0Mix" / "separation" / "hparams" / "s4m_tiny.yaml"
    with pytest.raises(ValueError, match="--optimizer_step_limit: expected a whole number .* got '1.5'"):
        parse_arguments([str(yaml_path), f"--data_folder={tmp_path}", "--optimizer_step_limit=1.5"])


def test_start_from_mixture_initialises_the_decoder_as_the_encoder_inverse(datasets, tmp_path):
    # One step at a tiny learning rate: the saved decoder still inverts the saved encoder.
    import torch

    from speechbrain_s4m.lobes import WaveformEncoder

    out = tmp_path / "out"
    run(
        train_command(
            "WSJ0Mix",
            "s4m_tiny",
            datasets["WSJ0Mix"],
            out,
            "--N_epochs=1",
            "--max_train_minutes=0.0001",
            "--start_from_mixture=True",
            "--lr=1e-9",
        )
    )
    checkpoint = sorted((out / "save").glob("CKPT+*"))[-1]
    encoder_weight = torch.load(checkpoint / "encoder.ckpt")["weight"]
    decoder_weight = torch.load(checkpoint / "decoder.ckpt")["weight"]
    encoder = WaveformEncoder(kernel_size=encoder_weight.shape[-1], out_channels=encoder_weight.shape[0])
    with torch.no_grad():
        encoder.weight.copy_(encoder_weight)
    torch.testing.assert_close(decoder_weight, encoder.inverse_filters(), atol=1e-5, rtol=1e-3)


def test_start_from_mixture_needs_the_s4m_lobes():
    from speechbrain.lobes.models.dual_path import Decoder, Encoder

    from speechbrain_s4m.lobes import S4MMaskNet, WaveformEncoder
    from speechbrain_s4m.training.brain import start_from_mixture

    masknet = S4MMaskNet(17, hidden_channels=16, num_blocks=1)
    with pytest.raises(ValueError, match="WaveformEncoder and S4MMaskNet, got Encoder"):
        start_from_mixture(Encoder(32, 17), masknet, Decoder(17, 1, 32, stride=8, bias=False))
    with pytest.raises(ValueError, match=r"weight shape \(17, 1, 32\) and stride 8"):
        start_from_mixture(WaveformEncoder(32), masknet, Decoder(17, 1, 32, stride=16, bias=False))


def test_dynamic_mixing_from_librispeech_with_a_speaker_list(datasets, tmp_path):
    folder = make_librispeech_folder(tmp_path, n_speakers=4, n_utts=2)
    speakers = tmp_path / "train_speakers.txt"
    speakers.write_text("19\n20\n21\n")
    out = tmp_path / "out"
    run(
        train_command(
            "LibriMix",
            "s4m_tiny",
            datasets["LibriMix"],
            out,
            "--debug",
            "--dynamic_mixing=True",
            f"--base_folder_dm={folder}",
            f"--dm_speakers_file={speakers}",
            "--dm_examples_per_epoch=2",
        )
    )
    assert read_results(out)[-1]["snt_id"] == "avg"
