"""Unit tests of the shared separation Brain's pieces (speechbrain_s4m.training.brain)."""

from pathlib import Path

import pytest
from speechbrain.utils.checkpoints import Checkpointer

from speechbrain_s4m.training.brain import EarlyStoppingCounter

REPO = Path(__file__).resolve().parents[2]


def test_early_stopping_state_survives_a_checkpoint(tmp_path):
    counter = EarlyStoppingCounter(limit=20, limit_to_stop=3, limit_warmup=0, direction="min")
    checkpointer = Checkpointer(tmp_path, recoverables={"counter": counter})
    for loss in [5.0, 4.0, 4.5, 4.6]:  # best at epoch 2, then two epochs without gain
        next(counter)
        counter.update_metric(loss)
    checkpointer.save_checkpoint()

    resumed = EarlyStoppingCounter(limit=20, limit_to_stop=3, limit_warmup=0, direction="min")
    Checkpointer(tmp_path, recoverables={"counter": resumed}).recover_if_possible()
    assert resumed.current == 4
    assert resumed.best_score == 4.0 and resumed.best_limit == 2
    # One more epoch without improvement exhausts the patience of 3.
    assert next(resumed) == 5
    resumed.update_metric(4.7)
    assert resumed.should_stop
    assert list(resumed) == []


def test_checkpoint_files_cut_short_while_saving_are_detected(tmp_path):
    # A run killed while SpeechBrain writes a checkpoint leaves a truncated file;
    # resuming must set that checkpoint aside instead of failing to load it.
    import torch

    from speechbrain_s4m.training.brain import _checkpoint_file_is_whole

    whole = tmp_path / "masknet.ckpt"
    torch.save({"weight": torch.randn(64, 64)}, whole)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    text = tmp_path / "brain.ckpt"
    text.write_text("step: 3\n")
    assert _checkpoint_file_is_whole(whole)
    assert _checkpoint_file_is_whole(text)
    assert not _checkpoint_file_is_whole(truncated)
    assert not _checkpoint_file_is_whole(empty)
    assert not _checkpoint_file_is_whole(tmp_path / "missing.ckpt")


# ---------------------------------------------------------------- optimizer groups
S4_TAGGED_NAMES = ("log_dt", "log_neg_real", "imag", "input_matrix", "low_rank")


def _toy_module():
    import torch

    toy = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    toy[0].weight._optim = {"weight_decay": 0.0}
    toy[1].bias._optim = {"weight_decay": 0.0}
    toy[1].weight._optim = {"lr": 1e-4}
    toy[0].bias.requires_grad_(False)
    return toy


def test_parameters_are_grouped_by_their_optim_tag():
    from speechbrain_s4m.training.brain import optimizer_parameter_groups

    toy = _toy_module()
    groups = optimizer_parameter_groups(toy)
    # Untagged first (only toy[0].bias, frozen: so none), then tags in order of appearance.
    assert [{k: v for k, v in g.items() if k != "params"} for g in groups] == [
        {"weight_decay": 0.0},
        {"lr": 1e-4},
    ]
    assert [[id(p) for p in g["params"]] for g in groups] == [
        [id(toy[0].weight), id(toy[1].bias)],
        [id(toy[1].weight)],
    ]
    toy[0].bias.requires_grad_(True)
    del toy[1].weight._optim
    groups = optimizer_parameter_groups(toy)
    assert [[id(p) for p in g["params"]] for g in groups] == [
        [id(toy[0].bias), id(toy[1].weight)],
        [id(toy[0].weight), id(toy[1].bias)],
    ]
    # SpeechBrain's remove_vector_weight_decay: untagged vectors join weight decay 0.
    groups = optimizer_parameter_groups(toy, vectors_without_weight_decay=True)
    assert [len(g["params"]) for g in groups] == [1, 3] and groups[1]["weight_decay"] == 0.0
    toy[1].weight._optim = 0.0
    with pytest.raises(ValueError, match="expected a dict of optimizer hyperparameters"):
        optimizer_parameter_groups(toy)


def _recipe_brain(tmp_path, *overrides, run_opts=None):
    """The SeparationBrain of the LibriMix S4M-tiny recipe (small), built as
    speechbrain_s4m/training/recipe.py builds it, with its optimizer initialised."""
    from hyperpyyaml import load_hyperpyyaml

    from speechbrain_s4m.training.brain import SeparationBrain

    yaml_path = REPO / "recipes" / "LibriMix" / "separation" / "hparams" / "s4m_tiny.yaml"
    options = [
        f"data_folder: {tmp_path / 'data'}",
        f"output_folder: {tmp_path / 'out'}",
        "num_blocks: 1",
        "hidden_channels: 16",
        *overrides,
    ]
    with open(yaml_path, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, "\n".join(options))
    brain = SeparationBrain(
        modules=hparams["modules"],
        opt_class=hparams["optimizer"],
        hparams=hparams,
        run_opts={"device": "cpu", **(run_opts or {})},
        checkpointer=hparams["checkpointer"],
    )
    brain.init_optimizers()
    brain.skipped_batches = 0  # as on_fit_start and on_stage_start(TRAIN) set them
    brain.fit_start_time = 0.0
    brain.train_audio_seconds = 0.0
    return brain


def test_recipe_optimizer_gives_ssm_parameters_no_weight_decay(tmp_path):
    brain = _recipe_brain(tmp_path, "weight_decay: 0.01")
    groups = brain.optimizer.param_groups
    assert brain.checkpointer.recoverables["optimizer"] is brain.optimizer
    decay_of = {}
    for group in groups:
        for parameter in group["params"]:
            assert id(parameter) not in decay_of, "a parameter in two groups"
            decay_of[id(parameter)] = group["weight_decay"]
    tagged, untagged = [], []
    for name, parameter in brain.modules.named_parameters():
        assert parameter.requires_grad
        (tagged if getattr(parameter, "_optim", None) is not None else untagged).append(name)
        assert decay_of.pop(id(parameter)) == (0.0 if name in tagged else 0.01), name
    assert not decay_of  # nothing else in the optimizer
    assert tagged and untagged
    assert all(name.split(".")[-1] in S4_TAGGED_NAMES for name in tagged), tagged


def test_optimizer_state_saved_in_one_group_is_split_on_resume(tmp_path):
    # A checkpoint written before the _optim groups holds one group (SpeechBrain's
    # own init_optimizers): resuming keeps Adam's moments and the scheduled lr.
    import speechbrain as sb
    import torch

    from speechbrain_s4m.training.brain import SeparationBrain

    def toy_brain():
        model = _toy_module()
        model[0].bias.requires_grad_(True)

        def opt_class(params):
            return torch.optim.Adam(params, lr=1e-3, weight_decay=0.01)

        checkpointer = Checkpointer(tmp_path, {"model": model})
        brain = SeparationBrain(
            modules={"model": model},
            opt_class=opt_class,
            run_opts={"device": "cpu"},
            checkpointer=checkpointer,
        )
        return brain, model

    old_brain, old_model = toy_brain()
    sb.Brain.init_optimizers(old_brain)  # the single group of earlier versions
    old = old_brain.optimizer
    old_model(torch.randn(5, 3)).square().sum().backward()
    old.step()
    old.param_groups[0]["lr"] = 5e-4  # halved by the scheduler
    old_brain.checkpointer.save_checkpoint()

    brain, model = toy_brain()
    brain.init_optimizers()
    assert len(brain.optimizer.param_groups) == 3
    brain.checkpointer.recover_if_possible()
    groups = brain.optimizer.param_groups
    assert [g["lr"] for g in groups] == [5e-4, 5e-4, 1e-4]  # the tag's lr wins
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0, 0.01]  # saved, or the tag's
    old_parameters = dict(old_model.named_parameters())
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, old_parameters[name])
        saved = old.state[old_parameters[name]]
        assert torch.equal(brain.optimizer.state[parameter]["exp_avg"], saved["exp_avg"]), name
        assert torch.equal(brain.optimizer.state[parameter]["exp_avg_sq"], saved["exp_avg_sq"])
        assert brain.optimizer.state[parameter]["step"] == 1


def test_optimizer_state_saved_in_another_parameter_order_is_left_out(tmp_path, caplog):
    # Same parameter names, registered in another order since: the positional
    # optimizer state cannot be mapped, so only its learning rate is kept.
    import speechbrain as sb
    import torch

    from speechbrain_s4m.training.brain import SeparationBrain

    def toy_brain(names):
        model = torch.nn.Module()
        for name in names:
            setattr(model, name, torch.nn.Parameter(torch.randn({"a": (3,), "b": (2, 2)}[name])))
        model.a._optim = {"weight_decay": 0.0}
        checkpointer = Checkpointer(tmp_path, {"model": model})
        brain = SeparationBrain(
            modules={"model": model},
            run_opts={"device": "cpu"},
            checkpointer=checkpointer,
            opt_class=lambda params: torch.optim.Adam(params, lr=1e-3),
        )
        return brain, model

    old_brain, old_model = toy_brain("ab")
    sb.Brain.init_optimizers(old_brain)
    (old_model.a.sum() + old_model.b.sum()).backward()
    old_brain.optimizer.step()
    old_brain.optimizer.param_groups[0]["lr"] = 5e-4
    old_brain.checkpointer.save_checkpoint()

    brain, model = toy_brain("ba")
    brain.init_optimizers()
    brain.checkpointer.recover_if_possible()
    assert torch.equal(model.b, old_model.b)
    assert [g["lr"] for g in brain.optimizer.param_groups] == [5e-4, 5e-4]
    assert not brain.optimizer.state
    assert "resuming with a fresh optimizer state" in caplog.text


def _scheduled_rates(brain, steps, before_step=None):
    """The rates of both groups at each optimizer step, as fit_batch sets them."""
    seen = []
    for step in range(steps):
        brain.optimizer_step = step  # SpeechBrain's counter of optimizer steps taken
        if before_step is not None:
            before_step(step)
        brain._schedule_learning_rate()
        seen.append([group["lr"] for group in brain.optimizer.param_groups])
    assert len(seen[0]) == 2 and all(lrs[0] == lrs[1] for lrs in seen)  # both groups
    return [round(lrs[0], 7) for lrs in seen]


def test_learning_rate_warms_up_linearly_then_holds(tmp_path):
    brain = _recipe_brain(tmp_path, "lr_warmup_steps: 4", "lr: 0.002")
    assert _scheduled_rates(brain, 6) == [0.0005, 0.001, 0.0015, 0.002, 0.002, 0.002]


def test_learning_rate_warms_up_then_decays_by_half_cosine(tmp_path):
    brain = _recipe_brain(tmp_path, "lr_warmup_steps: 2", "lr_decay_steps: 2", "lr_decay_final: 0.1")
    assert _scheduled_rates(brain, 6) == [0.0005, 0.001, 0.001, 0.00055, 0.0001, 0.0001]


def test_learning_rate_schedule_keeps_a_plateau_halving(tmp_path):
    # ReduceLROnPlateau halves the rate after a validation; the decay goes on from there.
    brain = _recipe_brain(tmp_path, "lr_decay_steps: 2", "lr_decay_final: 0.1")

    def halve_before_step_1(step):
        if step == 1:
            for group in brain.optimizer.param_groups:
                group["lr"] /= 2

    assert _scheduled_rates(brain, 4, halve_before_step_1) == [0.001, 0.000275, 0.00005, 0.00005]


def test_learning_rate_schedule_rejects_a_final_fraction_out_of_range(tmp_path):
    brain = _recipe_brain(tmp_path, "lr_decay_steps: 2", "lr_decay_final: 0")
    brain.optimizer_step = 0
    with pytest.raises(ValueError, match="lr_decay_final"):
        brain._schedule_learning_rate()


def test_no_schedule_by_default(tmp_path):
    brain = _recipe_brain(tmp_path)
    assert _scheduled_rates(brain, 3) == [0.001] * 3


def test_a_batch_with_non_finite_audio_is_skipped_and_named(tmp_path, caplog):
    import torch
    from speechbrain.dataio.batch import PaddedBatch

    brain = _recipe_brain(tmp_path, "use_speedperturb: False", "threshold_byloss: False")
    brain.skipped_batches = 0
    brain.fit_start_time = 0.0
    before = {name: p.detach().clone() for name, p in brain.modules.named_parameters()}

    def example(snt_id, bad):
        sources = torch.randn(2, 800)
        if bad:
            sources[1, 100] = float("nan")
        return {"id": snt_id, "mix_sig": sources.sum(0), "s1_sig": sources[0], "s2_sig": sources[1]}

    batch = PaddedBatch([example("clean-one", False), example("broken-one", True)])
    loss = brain.fit_batch(batch)
    assert loss.item() == 0.0 and brain.skipped_batches == 1
    assert "non-finite audio (NaN or Inf) in broken-one" in caplog.text
    assert "clean-one" not in caplog.text
    for name, p in brain.modules.named_parameters():
        assert torch.equal(p, before[name]), name  # no step taken


def test_training_crops_fall_within_each_examples_own_audio(tmp_path):
    # One long and one short example in a padded batch: every crop is a slice of its
    # own example's audio, never of the short one's zero padding.
    import speechbrain as sb
    import torch
    from speechbrain.dataio.batch import PaddedBatch

    brain = _recipe_brain(
        tmp_path, "use_speedperturb: False", "limit_training_signal_len: True", "training_signal_len: 300"
    )
    long_sources, short_sources = torch.rand(2, 2000) + 1, torch.rand(2, 500) + 1  # never zero
    batch = PaddedBatch(
        [
            {"id": "long", "mix_sig": long_sources.sum(0), "s1_sig": long_sources[0], "s2_sig": long_sources[1]},
            {"id": "short", "mix_sig": short_sources.sum(0), "s1_sig": short_sources[0], "s2_sig": short_sources[1]},
        ]
    )
    torch.manual_seed(0)
    for _ in range(20):
        mix, targets, _ = brain._batch_signals(batch)
        _, cropped = brain.compute_forward(mix, targets, sb.Stage.TRAIN)
        assert cropped.shape == (2, 300, 2)
        assert (cropped != 0).all()  # no padding inside any crop
        for example, sources in enumerate((long_sources, short_sources)):
            first = cropped[example, 0, 0]
            start = int((sources[0] == first).nonzero()[0])
            assert torch.equal(cropped[example], sources[:, start : start + 300].T)

    tiny = torch.rand(2, 100) + 1  # shorter than the crop: kept whole
    batch = PaddedBatch([{"id": "tiny", "mix_sig": tiny.sum(0), "s1_sig": tiny[0], "s2_sig": tiny[1]}])
    mix, targets, _ = brain._batch_signals(batch)
    _, cropped = brain.compute_forward(mix, targets, sb.Stage.TRAIN)
    assert torch.equal(cropped[0], tiny.T)


# ------------------------------------------------------- clipping and accumulation
def _speech_examples(seed, count, length=1200):
    """``count`` two-speaker mixtures of ``length`` samples, as a dataset yields them."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(count):
        sources = torch.randn(2, length, generator=generator) * torch.tensor([[1.0], [0.5]])
        examples.append({"id": f"ex{seed}-{i}", "mix_sig": sources.sum(0), "s1_sig": sources[0], "s2_sig": sources[1]})
    return examples


TRAIN_PLAINLY = ("use_speedperturb: False", "threshold_byloss: False", "seed: 7")


def test_gradient_clipping_covers_every_parameter_group(tmp_path):
    import torch
    from speechbrain.dataio.batch import PaddedBatch

    brain = _recipe_brain(tmp_path, *TRAIN_PLAINLY, "max_grad_norm: 0.001")
    assert len(brain.optimizer.param_groups) == 2  # the S4 parameters have their own group
    norms = []

    def record(optimizer, args, kwargs):  # the gradients the step uses, after clipping
        group_norms = [
            torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in group["params"] if p.grad is not None]))
            for group in optimizer.param_groups
        ]
        norms.append([torch.linalg.vector_norm(torch.stack(group_norms)).item(), *(n.item() for n in group_norms)])

    brain.optimizer.register_step_pre_hook(record)
    brain.step = 1
    brain.fit_batch(PaddedBatch(_speech_examples(0, 2)))
    [(total, first_group, ssm_group)] = norms
    assert total == pytest.approx(0.001, rel=1e-4)
    assert first_group > 0 and ssm_group > 0  # both groups took part


def _after_one_step(folder, batches, factor):
    """Parameters after feeding ``batches`` to a fresh recipe Brain (seed 7) with
    ``grad_accumulation_factor`` ``factor``; one optimizer step must have been taken."""
    brain = _recipe_brain(folder, *TRAIN_PLAINLY, run_opts={"grad_accumulation_factor": factor})
    for step, batch in enumerate(batches, start=1):
        brain.step = step  # as SpeechBrain's training loop counts batches
        brain.fit_batch(batch)
    assert brain.optimizer_step == 1
    return {name: p.detach().clone() for name, p in brain.modules.named_parameters()}


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    import torch
    from speechbrain.dataio.batch import PaddedBatch

    examples = _speech_examples(0, 2)
    whole = _after_one_step(tmp_path / "whole", [PaddedBatch(examples)], factor=1)
    accumulated = _after_one_step(tmp_path / "accumulated", [PaddedBatch([e]) for e in examples], factor=2)
    start = dict(_recipe_brain(tmp_path / "start", *TRAIN_PLAINLY).modules.named_parameters())
    assert any(not torch.equal(start[name], value) for name, value in whole.items())  # a real step
    for name, value in whole.items():
        torch.testing.assert_close(accumulated[name], value, rtol=1e-4, atol=1e-6, msg=name)
