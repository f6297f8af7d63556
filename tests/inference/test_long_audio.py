"""The chunked overlap-add path reports its progress: once per chunk, in samples of
the mixture, adding up to its length, without changing the output."""

import pytest
import torch

from speechbrain_s4m.inference.long_audio import separate_in_chunks


def halves(mix):  # [1, T] -> [1, T, 2]
    return torch.stack([mix / 2, mix / 3], dim=-1)


@pytest.mark.parametrize("length, chunks", [(300, 1), (1000, 3), (1001, 4), (2000, 7)])
def test_progress_adds_up_to_the_mixture_once_per_chunk(length, chunks):
    mix = torch.randn(length)
    reported = []
    with_progress = separate_in_chunks(halves, mix, 400, 100, progress=reported.append)
    assert len(reported) == chunks and sum(reported) == length and all(r > 0 for r in reported)
    assert torch.equal(with_progress, separate_in_chunks(halves, mix, 400, 100))
