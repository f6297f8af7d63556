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
