"""Check that DDP trains one model: train a LibriMix-layout recipe under ``torchrun``
and compare what the ranks end with.

::

    torchrun --nproc_per_node=2 -m speechbrain_s4m.training.ddp_check hparams/s4m_tiny.yaml \\
        --data_folder=<Libri2Mix root> --distributed_backend=gloo [train.py's options]

It trains as ``recipes/LibriMix/separation/train.py`` does (no test stage). Each rank
then writes ``<output_folder>/rank<r>.pt`` (its parameters, optimizer steps and
skipped batches), and rank 0 compares them: it prints ``ranks agree`` and every rank
exits with status 0 when all parameters are bit-identical, and rank 0 names the
parameters that differ and exits with status 1 otherwise. ``make gpu-check`` runs it
with two processes on one GPU.

Authors
 * speechbrain-s4m contributors
"""

import os
import sys
from typing import Dict, List, Sequence, Type

import torch
from speechbrain.utils.distributed import is_distributed_initialized

from speechbrain_s4m.data.preparation import prepare_librimix
from speechbrain_s4m.training import recipe
from speechbrain_s4m.training.brain import SeparationBrain


def rank_state(brain: SeparationBrain, modules: Dict[str, torch.nn.Module]) -> Dict[str, object]:
    """What a rank ends with: the parameters of the (unwrapped) ``modules``, on the
    CPU, its optimizer steps and its skipped batches."""
    parameters = {
        f"{name}.{key}": value.detach().cpu().clone()
        for name, module in modules.items()
        for key, value in module.named_parameters()
    }
    return {"parameters": parameters, "optimizer_step": brain.optimizer_step, "skipped": brain.skipped_batches}


def differing_parameters(states: Sequence[Dict[str, object]]) -> List[str]:
    """The parameters that are not bit-identical on every rank (or missing on some).

    Example
    -------
    >>> same = {"parameters": {"w": torch.ones(2)}}
    >>> differing_parameters([same, same]), differing_parameters([same, {"parameters": {"w": torch.zeros(2)}}])
    ([], ['w'])
    """
    differing = []
    for name in sorted(set().union(*(state["parameters"] for state in states))):
        values = [state["parameters"].get(name) for state in states]
        if any(value is None or not torch.equal(value, values[0]) for value in values):
            differing.append(name)
    return differing


def run(argv: Sequence[str], brain_class: Type[SeparationBrain] = SeparationBrain) -> int:
    """Train, save this rank's state, and (rank 0) compare the ranks' states; returns
    the exit status (0: the ranks agree)."""
    args = recipe.parse_arguments(list(argv))
    recipe.prepare_data(prepare_librimix, args, ["sample_rate", "mode", "num_spks", "train_subset", "mixture_type"])
    hparams = recipe.load_hparams(args)
    train, valid, _ = recipe.build_datasets(hparams, dynamic_mixing_layout="librispeech")
    brain = recipe.build_brain(hparams, args, brain_class)
    recipe.fit(brain, hparams, train, valid)
    distributed = is_distributed_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    world = torch.distributed.get_world_size() if distributed else 1
    folder = hparams["output_folder"]
    torch.save(rank_state(brain, hparams["modules"]), os.path.join(folder, f"rank{rank}.pt"))
    if world > 1:
        torch.distributed.barrier()
    status = 0
    if rank == 0:
        states = [torch.load(os.path.join(folder, f"rank{r}.pt")) for r in range(world)]
        differing = differing_parameters(states)
        steps = [state["optimizer_step"] for state in states]
        if differing:
            print(f"ranks disagree: {len(differing)} parameters differ, e.g. {', '.join(differing[:5])}")
            status = 1
        else:
            print(f"ranks agree: {world} ranks, {len(states[0]['parameters'])} parameters, optimizer steps {steps}")
    if world > 1:
        recipe.exit_distributed_rank(status if rank == 0 else 0)
    return status


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
