"""The main job on a built-in default, offline: ``make demo``.

1. Generate (or reuse) a two-speaker dataset of synthesized speech in the Libri2Mix
   layout (:mod:`speechbrain_s4m.data.synthetic`).
2. Train S4M-tiny with the LibriMix recipe (``recipes/LibriMix/separation/train.py
   hparams/s4m_tiny.yaml``) for a fixed number of optimizer steps (a wall-clock
   guard stops a much slower machine early), by YAML overrides only.
3. Evaluate it on the test split (the recipe writes ``test_results.csv``).
4. Export the model for SpeechBrain's ``SepformerSeparation`` (``s4m-export``).
5. Separate one test mixture with ``s4m-separate``.
6. Write a report folder: training curve, spectrograms, metrics and output paths.

The last line printed is ``test SI-SNRi: <value> dB``.

Authors
 * speechbrain-s4m contributors
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "LibriMix" / "separation"


@dataclass
class DemoBudget:
    """Sizes and budget of one demo run (the full demo and the quick test share the
    code path and differ only in these numbers).

    Training runs ``train_steps`` optimizer steps, so the same seed gives the same
    model on any machine; ``train_minutes`` is only a guard that stops a much slower
    machine early. The rate warms up over ``warmup_steps`` and then decays along a
    half cosine until the last step.

    The full demo trains a narrower, shallower S4M-tiny, by YAML overrides only:
    2 unfolded passes of a 128-channel block instead of 16 of 512, an 8 ms encoder
    kernel with 256 basis channels instead of 4 ms and 17, batch 8 of random 1 s
    crops, lr 2e-3, ``start_from_mixture`` (a decoder that inverts the encoder and
    masks near 1/2, so the first estimates are about half the mixture) and dynamic
    mixing of the training utterances. What each choice gave on a 2-core CPU is in
    the README (Quick start)."""

    num_train: int = 2000
    num_dev: int = 40
    num_test: int = 100
    train_steps: int = 3600
    warmup_steps: int = 100
    train_minutes: float = 12.0
    dynamic_mixing: bool = True
    overrides: List[str] = field(
        default_factory=lambda: [
            "--num_blocks=2",
            "--hidden_channels=128",
            "--kernel_size=64",
            "--N_encoder_out=256",
            "--start_from_mixture=True",
            "--lr=0.002",
            "--batch_size=8",
            "--limit_training_signal_len=True",
            "--training_signal_len=8000",
            "--use_speedperturb=False",
            "--threshold_byloss=False",
            "--N_epochs=1000",
            "--patience=1000",
            "--ckpt_interval_minutes=0",
            "--num_workers=1",
        ]
    )

    def mixing(self, data: Path, workdir: Path) -> List[str]:
        """The recipe options of dynamic mixing, when on: a new pairing of the training
        utterances of ``data``, at new levels, for every example of every epoch, from
        links in ``workdir/dm_sources`` (:func:`dynamic_mixing_sources`)."""
        if not self.dynamic_mixing:
            return []
        sources = dynamic_mixing_sources(data, workdir / "dm_sources")
        return [
            "--dynamic_mixing=True",
            f"--base_folder_dm={sources}",
            f"--dm_examples_per_epoch={self.num_train}",
        ]

    def schedule(self) -> List[str]:
        """The recipe options of the step budget and the learning-rate schedule."""
        return [
            f"--optimizer_step_limit={self.train_steps}",
            f"--lr_warmup_steps={self.warmup_steps}",
            f"--lr_decay_steps={max(0, self.train_steps - self.warmup_steps)}",
            f"--max_train_minutes={self.train_minutes}",
        ]


QUICK = DemoBudget(
    num_train=8,
    num_dev=2,
    num_test=3,
    train_steps=6,
    warmup_steps=2,
    train_minutes=0.2,
    overrides=[
        "--num_blocks=1",
        "--hidden_channels=16",
        "--start_from_mixture=True",
        "--batch_size=2",
        "--limit_training_signal_len=True",
        "--training_signal_len=8000",
        "--use_speedperturb=False",
        "--N_epochs=2",
        "--ckpt_interval_minutes=0",
        "--num_workers=0",
    ],
)


def _run(command: Sequence[str], step: str) -> None:
    print(f"\n=== {step}\n$ {' '.join(str(c) for c in command)}", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([str(c) for c in command], env=env)
    if result.returncode != 0:
        raise SystemExit(f"demo: step '{step}' failed with exit status {result.returncode}")


def dynamic_mixing_sources(data: Path, out: Path) -> Path:
    """A LibriSpeech-layout folder ``out/<speaker>/0/<utterance>.wav`` of links to the
    training sources of the synthetic dataset in ``data`` (each ``s1``/``s2`` file, by
    the speaker its metadata names), for the recipe's dynamic mixing. Rebuilt from the
    metadata each time; nothing in ``data`` changes."""
    split = data / "Libri2Mix" / "wav8k" / "min" / "train-100"
    metadata = data / "Libri2Mix" / "wav8k" / "min" / "metadata" / "train-100.csv"
    if out.exists():
        shutil.rmtree(out)
    with open(metadata, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            for source in ("s1", "s2"):
                folder = out / row[f"{source}_speaker"] / "0"
                folder.mkdir(parents=True, exist_ok=True)
                target = split / source / f"{row['mixture_ID']}.wav"
                os.symlink(target, folder / f"{row['mixture_ID']}_{source}.wav")
    return out


def _mean_results(results_csv: Path) -> Dict[str, float]:
    with open(results_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    avg = next(r for r in rows if r["snt_id"] == "avg")
    return {k: float(v) for k, v in avg.items() if k != "snt_id"} | {"utterances": len(rows) - 1}


def run_demo(workdir: Path, budget: DemoBudget, retrain: bool = False, seed: int = 0) -> Dict:
    """Run every step; return the summary written to ``report/metrics.json``."""
    import soundfile as sf
    import torch

    from speechbrain_s4m.data.synthetic import make_synthetic_librimix
    from speechbrain_s4m.export.speechbrain_folder import export_model
    from speechbrain_s4m.inference.html_report import ReportEntry, model_card_summary, plot_spectrograms, write_report
    from speechbrain_s4m.metrics import apply_permutation, best_permutation, sdr, si_snr
    from speechbrain_s4m.training.curves import plot_training_curves, read_training_curve

    workdir = workdir.resolve()
    data, run, model, separated, report = (workdir / name for name in ("data", "run", "model", "separated", "report"))

    print("=== 1. Built-in dataset: synthesized two-speaker mixtures (Libri2Mix layout, 8 kHz)")
    make_synthetic_librimix(
        str(data),
        num_train=budget.num_train,
        num_dev=budget.num_dev,
        num_test=budget.num_test,
        sample_rate=8000,
        seed=seed,
        progress=True,
    )

    if retrain or not (run / "test_results.csv").is_file():
        _run(
            [
                sys.executable,
                RECIPE / "train.py",
                RECIPE / "hparams" / "s4m_tiny.yaml",
                f"--data_folder={data}",
                f"--output_folder={run}",
                "--device=cpu",
                f"--seed={seed}",
                *budget.overrides,
                *budget.mixing(data, workdir),
                *budget.schedule(),
            ],
            f"2-3. Train S4M-tiny ({budget.train_steps} steps, at most {budget.train_minutes:g} "
            f"minutes) and evaluate on the test split",
        )
    else:
        print(f"\n=== 2-3. Reusing the trained and evaluated run in {run} (--retrain to train again)")

    print("\n=== 4. Export for SpeechBrain's SepformerSeparation")
    export_model(str(run), str(model), force=True)  # the demo's own folder
    print(f"exported to {model}")

    test_folder = data / "Libri2Mix" / "wav8k" / "min" / "test"
    mixture = sorted((test_folder / "mix_clean").glob("*.wav"))[0]
    _run(
        [
            sys.executable,
            "-m",
            "speechbrain_s4m.inference.separate_command",
            "--model",
            model,
            mixture,
            "--out",
            separated,
            "--force",
        ],
        "5. Separate one test mixture with s4m-separate",
    )

    report.mkdir(parents=True, exist_ok=True)
    plot_training_curves(
        {"S4M-tiny": read_training_curve(run / "train_log.txt")},
        report / "training_curve.png",
        title="S4M-tiny on the built-in synthetic Libri2Mix",
    )
    mix, rate = sf.read(str(mixture), dtype="float32")
    estimates = torch.stack(
        [torch.from_numpy(sf.read(str(separated / f"{mixture.stem}_s{s}.wav"), dtype="float32")[0]) for s in (1, 2)],
        dim=-1,
    )
    references = torch.stack(
        [torch.from_numpy(sf.read(str(test_folder / f"s{s}" / mixture.name), dtype="float32")[0]) for s in (1, 2)],
        dim=-1,
    )
    length = min(len(estimates), len(references))
    perm, _ = best_permutation(estimates[None, :length], references[None, :length])
    estimates = apply_permutation(estimates[None, :length], perm)[0]
    plot_spectrograms(
        {
            "mixture": mix[:length],
            "estimate, speaker 1": estimates[:, 0],
            "reference, speaker 1": references[:length, 0],
            "estimate, speaker 2": estimates[:, 1],
            "reference, speaker 2": references[:length, 1],
        },
        rate,
        report / "spectrograms.png",
    )
    outputs = [separated / f"{mixture.stem}_s{s}.wav" for s in (1, 2)]
    mix_t = torch.from_numpy(mix[:length])[None, :, None].expand(-1, -1, 2)  # [1, T, 2]
    ref_t, est_t = references[None, :length].double(), estimates[None].double()
    gains = {
        "SI-SNRi (dB)": (si_snr(est_t, ref_t) - si_snr(mix_t.double(), ref_t))[0].tolist(),
        "SDRi (dB)": (sdr(est_t, ref_t) - sdr(mix_t.double(), ref_t))[0].tolist(),
    }
    order = perm[0].tolist()  # estimate k is reference k after the permutation
    write_report(
        str(report),
        "S4M-tiny demo: one test mixture, separated",
        [
            ReportEntry(
                name=mixture.name,
                mixture=str(mixture),
                sources=[str(outputs[k]) for k in order],
                references=[str(test_folder / f"s{s}" / mixture.name) for s in (1, 2)],
                spectrogram=str(report / "spectrograms.png"),
                metrics=gains,
            )
        ],
        model_card_summary(str(model)),
        force=True,  # the demo's own report folder
    )
    summary = {
        "test_metrics_db": _mean_results(run / "test_results.csv"),
        "paths": {
            "dataset": str(data),
            "training_run": str(run),
            "test_results": str(run / "test_results.csv"),
            "train_log": str(run / "train_log.txt"),
            "exported_model": str(model),
            "separated_mixture": str(mixture),
            "separated_outputs": [str(separated / f"{mixture.stem}_s{s}.wav") for s in (1, 2)],
            "training_curve": str(report / "training_curve.png"),
            "spectrograms": str(report / "spectrograms.png"),
            "report_page": str(report / "index.html"),
        },
        "budget": {
            "train_steps": budget.train_steps,
            "warmup_steps": budget.warmup_steps,
            "train_minutes": budget.train_minutes,
            "overrides": budget.overrides,
            "num_train": budget.num_train,
            "num_dev": budget.num_dev,
            "num_test": budget.num_test,
        },
    }
    (report / "metrics.json").write_text(json.dumps(summary, indent=2))
    metrics = summary["test_metrics_db"]
    lines = [
        "# Demo report",
        "",
        "| SI-SNR | SI-SNRi | SDR | SDRi | test mixtures |",
        "|---|---|---|---|---|",
        f"| {metrics['si-snr']:.2f} dB | {metrics['si-snr_i']:.2f} dB | {metrics['sdr']:.2f} dB "
        f"| {metrics['sdr_i']:.2f} dB | {metrics['utterances']} |",
        "",
        "## Outputs",
        "",
    ]
    lines += [f"- {name}: `{value}`" for name, value in summary["paths"].items()]
    (report / "README.md").write_text("\n".join(lines) + "\n")
    return summary


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="results/demo", help="where everything is written")
    parser.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help=f"optimizer steps to train (default {DemoBudget.train_steps})",
    )
    parser.add_argument(
        "--train-minutes",
        type=float,
        default=None,
        help=f"stop training after this many minutes even if steps are left (default {DemoBudget.train_minutes:g})",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny budget (seconds): the test suite's run")
    parser.add_argument("--retrain", action="store_true", help="train again even if a finished run exists")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    budget = QUICK if args.quick else DemoBudget()
    if args.train_steps is not None:
        budget.train_steps = args.train_steps
    if args.train_minutes is not None:
        budget.train_minutes = args.train_minutes
    summary = run_demo(Path(args.workdir), budget, retrain=args.retrain, seed=args.seed)
    print("\n=== 6. Report")
    for name, value in summary["paths"].items():
        print(f"{name}: {value}")
    metrics = summary["test_metrics_db"]
    print(
        f"test SI-SNR: {metrics['si-snr']:.2f} dB, SDR: {metrics['sdr']:.2f} dB, "
        f"SDRi: {metrics['sdr_i']:.2f} dB on {metrics['utterances']} mixtures"
    )
    print(f"test SI-SNRi: {metrics['si-snr_i']:.2f} dB")


if __name__ == "__main__":
    main()
