"""How forward time and peak memory scale with the input length: one measurement per
fresh Python process (so that its peak resident set size is its own), described by a
:class:`ScalingSpec` that travels to the worker as JSON (``s4m-bench --worker``).

Peak memory is the peak resident set size ``VmHWM`` after the timed forwards minus
the resident set size before them (after building the model and a 0.25 s warm-up; the
peak is reset to that point through /proc/self/clear_refs; without /proc,
``ru_maxrss`` after minus before). In its own process a measurement may allocate at
most ``memory_limit_gib`` more (``RLIMIT_AS``), so that running out of memory is a
clean 'out of memory' row rather than the kernel's OOM killer on a shared machine.

Authors
 * speechbrain-s4m contributors
"""

import dataclasses
import gc
import json
import resource
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from speechbrain_s4m.benchmark.models import SAMPLE_RATE, build_model
from speechbrain_s4m.resources import (
    current_rss_bytes,
    keep_freed_memory,
    peak_rss_bytes,
    proc_field_bytes,
    reset_peak_rss,
    set_torch_threads,
)

IDENTITY = "identity"  # a model that returns its input: measures the harness alone
LONG_AUDIO_MODEL = "S4M-tiny"  # the model of the long-audio row
Measure = Callable[["ScalingSpec"], Dict[str, object]]


@dataclass
class ScalingSpec:
    """One scaling measurement.

    Attributes
    ----------
    model : str
        A model of :data:`~speechbrain_s4m.benchmark.models.RECIPE_HPARAMS`, or
        :data:`IDENTITY`.
    seconds : float
        Input length.
    threads : int
        Torch intra-op threads.
    repeats : int
        Timed forwards (median reported) ...
    budget_s : float
        ... stopping early once they took this long in all.
    sample_rate : int
        Of the model and the input.
    memory_limit_gib : float, optional
        Cap on what the measurement may allocate, in a process of its own.
    keep_freed_memory : bool
        Keep freed memory for reuse (glibc ``mallopt``), in a process of its own.
    long_audio : bool
        One pass through :func:`speechbrain_s4m.inference.long_audio.separate_in_chunks` instead
        of the forwards, in chunks of ``chunk_s`` overlapping by ``overlap_s``.
    chunk_s, overlap_s : float
        The long-audio path's chunks.
    isolated : bool
        True in the worker process of :func:`run_scaling_subprocess`: only there are
        the memory limit and ``keep_freed_memory`` applied.
    overrides : dict
        hparams overrides of the model's recipe file.

    Example
    -------
    >>> spec = ScalingSpec(model="S4M", seconds=4, threads=2)
    >>> ScalingSpec.from_json(spec.to_json()) == spec, spec.seconds
    (True, 4.0)
    """

    model: str
    seconds: float
    threads: int
    repeats: int = 3
    budget_s: float = 60.0
    sample_rate: int = SAMPLE_RATE
    memory_limit_gib: Optional[float] = None
    keep_freed_memory: bool = False
    long_audio: bool = False
    chunk_s: float = 10.0
    overlap_s: float = 2.0
    isolated: bool = False
    overrides: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.model = str(self.model)
        self.seconds, self.budget_s = float(self.seconds), float(self.budget_s)
        self.chunk_s, self.overlap_s = float(self.chunk_s), float(self.overlap_s)
        self.threads, self.repeats, self.sample_rate = int(self.threads), int(self.repeats), int(self.sample_rate)
        if self.memory_limit_gib is not None:
            self.memory_limit_gib = float(self.memory_limit_gib)
        self.overrides = dict(self.overrides)

    def to_json(self) -> str:
        """The spec as one line of JSON."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ScalingSpec":
        """The spec of :meth:`to_json`; unknown fields are a ``ValueError``.

        Example
        -------
        >>> ScalingSpec.from_json('{"model": "S4M", "seconds": 1, "threads": 1, "speed": 2}')
        Traceback (most recent call last):
        ...
        ValueError: ScalingSpec: unknown fields ['speed']
        """
        data = json.loads(text)
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"ScalingSpec: unknown fields {unknown}")
        return cls(**data)


def default_memory_limit_gib() -> Optional[float]:
    """70 % of the memory available now (``MemAvailable``), the default cap on what
    one scaling measurement may allocate; None where /proc/meminfo is unavailable.

    Example
    -------
    >>> limit = default_memory_limit_gib()
    >>> limit is None or limit >= 0
    True
    """
    available = proc_field_bytes("MemAvailable", "/proc/meminfo")
    return None if available is None else round(0.7 * available / 2**30, 1)


def scaling_worker(spec: ScalingSpec) -> Dict[str, object]:
    """Build ``spec.model``, warm up on 0.25 s, then time ``spec.repeats`` forwards of
    ``spec.seconds`` (stopping early after ``spec.budget_s``) or, with
    ``spec.long_audio``, one pass through the long-audio path; report the median time
    and the peak-memory increase. Run by :func:`run_scaling_subprocess` in a fresh
    process.

    Returns
    -------
    dict
        ``seconds``, ``time_s``, ``runs_s``, ``page_faults_per_run``,
        ``system_s_per_run``, ``peak_mib``, ``peak_rss_mib``, ``baseline_rss_mib``,
        ``method`` and ``memory_method``; or ``seconds`` and ``error`` when it ran out
        of memory.

    Example
    -------
    >>> r = scaling_worker(ScalingSpec(model=IDENTITY, seconds=0.5, threads=torch.get_num_threads(),
    ...                                repeats=2, sample_rate=1000))
    >>> sorted(r)
    ['baseline_rss_mib', 'memory_method', 'method', 'page_faults_per_run', 'peak_mib', 'peak_rss_mib',
     'runs_s', 'seconds', 'system_s_per_run', 'time_s']
    """
    threads = torch.get_num_threads()
    set_torch_threads(spec.threads)
    if spec.keep_freed_memory and spec.isolated:
        keep_freed_memory()
    try:
        return _scaling_measurement(spec)
    finally:
        set_torch_threads(threads)


def _memory_baseline() -> Tuple[int, str]:
    """Baseline for a peak-memory measurement and how it was taken."""
    gc.collect()
    if current_rss_bytes() is not None and reset_peak_rss():
        return current_rss_bytes(), "peak RSS (VmHWM, reset before) after minus RSS before the timed forwards"
    return peak_rss_bytes(), "peak RSS after minus peak RSS before the timed forwards"


def _limit_address_space(limit_gib: Optional[float]) -> None:
    """Let allocations beyond ``limit_gib`` more than now fail in this process (a
    clean 'out of memory' error) rather than invoke the kernel's OOM killer on a
    shared machine."""
    current = proc_field_bytes("VmSize")
    if not limit_gib or current is None:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = current + int(limit_gib * 2**30)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))


def _scaling_measurement(spec: ScalingSpec) -> Dict[str, object]:
    torch.manual_seed(0)
    if spec.model == IDENTITY:
        model: nn.Module = nn.Identity()
    else:
        model = build_model(spec.model, spec.sample_rate, spec.overrides)
    model.eval()
    generator = torch.Generator().manual_seed(0)
    warm_up = torch.randn(1, max(int(0.25 * spec.sample_rate), 256), generator=generator)
    mix = torch.randn(1, int(round(spec.seconds * spec.sample_rate)), generator=generator)
    with torch.inference_mode():
        model(warm_up)
    baseline, memory_method = _memory_baseline()
    if spec.isolated:  # only in a process of its own
        _limit_address_space(spec.memory_limit_gib)
    runs: List[float] = []
    usage = resource.getrusage(resource.RUSAGE_SELF)
    try:
        method = _timed_forwards(model, mix, spec, runs)
    except (MemoryError, RuntimeError) as error:
        if "memory" not in str(error).lower() and not isinstance(error, MemoryError):
            raise
        return {"seconds": spec.seconds, "error": f"out of memory (over the {spec.memory_limit_gib} GiB limit)"}
    peak = max(peak_rss_bytes(), baseline)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": spec.seconds,
        "time_s": statistics.median(runs),
        "runs_s": runs,
        "page_faults_per_run": (after.ru_minflt - usage.ru_minflt) / len(runs),
        "system_s_per_run": (after.ru_stime - usage.ru_stime) / len(runs),
        "peak_mib": (peak - baseline) / 2**20,
        "peak_rss_mib": peak / 2**20,
        "baseline_rss_mib": baseline / 2**20,
        "method": method,
        "memory_method": memory_method,
    }


def _timed_forwards(model: nn.Module, mix: torch.Tensor, spec: ScalingSpec, runs: List[float]) -> str:
    """Append the seconds of each timed pass to ``runs``; return how it separated."""
    with torch.inference_mode():
        if spec.long_audio:
            from speechbrain_s4m.inference.long_audio import separate_in_chunks

            start = time.perf_counter()
            separate_in_chunks(
                model, mix[0], int(spec.chunk_s * spec.sample_rate), int(spec.overlap_s * spec.sample_rate)
            )
            runs.append(time.perf_counter() - start)
            return f"separate_in_chunks, {spec.chunk_s:g} s chunks, {spec.overlap_s:g} s overlap"
        for _ in range(spec.repeats):
            start = time.perf_counter()
            model(mix)
            runs.append(time.perf_counter() - start)
            if sum(runs) > spec.budget_s:
                break
        return "whole input in one forward pass"


def run_scaling_subprocess(spec: ScalingSpec, timeout: float = 3600.0) -> Dict[str, object]:
    """:func:`scaling_worker` in a fresh Python process (``spec`` with ``isolated``
    set, so that the peak RSS is this measurement's alone); failures are returned as
    ``{"seconds": ..., "error": ...}``."""
    worker = dataclasses.replace(spec, isolated=True).to_json()
    command = [sys.executable, "-m", "speechbrain_s4m.benchmark", "--worker", worker]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"seconds": spec.seconds, "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    if done.returncode == -signal.SIGKILL:  # the kernel's OOM killer, before the rlimit bit
        return {"seconds": spec.seconds, "error": "out of memory (the worker was killed by the system, SIGKILL)"}
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"seconds": spec.seconds, "error": f"worker failed (rc {done.returncode}): {' | '.join(tail)}"}


def scaling_section(
    names: Sequence[str],
    lengths: Sequence[float],
    long_seconds: float,
    threads: int,
    repeats: int = 3,
    memory_limit_gib: Optional[float] = None,
    keep_freed: bool = False,
    overrides: Optional[Dict[str, Dict[str, Any]]] = None,
    log: Callable[[str], None] = lambda message: None,
    measure: Optional[Measure] = None,
) -> Dict[str, List[Dict[str, object]]]:
    """The ``scaling`` section: for each model of ``names``, one measurement per input
    length of ``lengths`` and, for :data:`LONG_AUDIO_MODEL` with ``long_seconds > 0``,
    one of ``long_seconds`` through the long-audio path (its row has
    ``"long_audio": True``).

    Arguments
    ---------
    names, lengths, long_seconds, threads, repeats, memory_limit_gib
        As in :class:`ScalingSpec`.
    keep_freed : bool
        :attr:`ScalingSpec.keep_freed_memory`.
    overrides : dict, optional
        hparams overrides per model.
    log : callable
        Progress messages.
    measure : callable, optional
        ``ScalingSpec -> result`` (default: :func:`run_scaling_subprocess`).

    Returns
    -------
    dict
        ``{model: [result per row]}``.

    Example
    -------
    >>> fake = lambda spec: {"seconds": spec.seconds, "time_s": 0.5, "peak_mib": 1.0}
    >>> scaling_section(["S4M-tiny"], [1.0], 600.0, threads=1, measure=fake)
    {'S4M-tiny': [{'seconds': 1.0, 'time_s': 0.5, 'peak_mib': 1.0},
                  {'seconds': 600.0, 'time_s': 0.5, 'peak_mib': 1.0, 'long_audio': True}]}
    """
    measure = measure or run_scaling_subprocess
    overrides = overrides or {}
    common = dict(
        threads=threads, sample_rate=SAMPLE_RATE, memory_limit_gib=memory_limit_gib, keep_freed_memory=keep_freed
    )
    scaling: Dict[str, List[Dict[str, object]]] = {}
    for name in names:
        entries = []
        for seconds in lengths:
            log(f"scaling: {name}, {seconds:g} s (fresh process) ...")
            spec = ScalingSpec(
                model=name, seconds=seconds, repeats=repeats, budget_s=60.0, overrides=overrides.get(name, {}), **common
            )
            entry = measure(spec)
            entries.append(entry)
            if "error" in entry:
                log(f"  error: {entry['error']}")
            else:
                log(f"  {entry['time_s']:.3f} s, peak +{entry['peak_mib']:.0f} MiB")
        if name == LONG_AUDIO_MODEL and long_seconds > 0:
            log(f"scaling: {name}, {long_seconds:g} s through the long-audio path (fresh process) ...")
            spec = ScalingSpec(
                model=name, seconds=long_seconds, long_audio=True, overrides=overrides.get(name, {}), **common
            )
            entry = measure(spec)
            entry["long_audio"] = True
            entries.append(entry)
        scaling[name] = entries
    return scaling
