"""Unit tests of the shared separation Brain's pieces (speechbrain_s4m.separation)."""

from speechbrain.utils.checkpoints import Checkpointer

from speechbrain_s4m.separation import EarlyStoppingCounter


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

    from speechbrain_s4m.separation import _checkpoint_file_is_whole

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
