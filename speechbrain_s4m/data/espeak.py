"""A small ctypes binding to the espeak-ng speech synthesizer.

espeak-ng (https://github.com/espeak-ng/espeak-ng) is a formant synthesizer: robotic,
but fast, fully offline, with many voices and voice variants. The library and its data
come from the PyPI package ``espeakng-loader``, so nothing has to be installed
system-wide. This module drives its C API (``speak_lib.h``) through :mod:`ctypes` in
``AUDIO_OUTPUT_SYNCHRONOUS`` mode: ``espeak_Synth`` returns once the whole text is
synthesized, and the samples reach Python through the synthesis callback. The output is
16-bit mono at :data:`SAMPLE_RATE` (22,050 Hz, as ``espeak_Initialize`` reports).

espeak-ng keeps its state in globals, so there is one engine per process, initialized
on first use and guarded by a lock (calls from several threads are serialized).

Reproducibility: espeak-ng's output depends slightly on what it synthesized before in
the same process (pitch-flutter phase, automatic gain and random-noise state live in C
statics that no API call resets), so :func:`synthesize` may return slightly different
samples for the same request (same duration and sound, not the same bytes).
:func:`synthesize_batch` runs a list of requests in a fresh worker process instead: its
output depends only on the list, byte for byte.

Example
-------
>>> audio = synthesize("hello", voice="en+m3")
>>> audio.dtype, audio.ndim, SAMPLE_RATE
(dtype('float32'), 1, 22050)

Authors
 * speechbrain-s4m contributors
"""

import ctypes
import json
import os
import struct
import subprocess
import sys
import threading
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

__all__ = [
    "SAMPLE_RATE",
    "EspeakError",
    "sample_rate",
    "synthesize",
    "synthesize_int16",
    "synthesize_batch",
]

#: The sample rate of espeak-ng's output (checked against ``espeak_Initialize``).
SAMPLE_RATE = 22050

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_espeakCHARS_UTF8 = 1
_espeakRATE, _espeakVOLUME, _espeakPITCH, _espeakRANGE = 1, 2, 3, 4
_espeakINITIALIZE_DONT_EXIT = 0x8000
_EE_OK = 0

_REQUEST_KEYS = ("text", "voice", "rate", "pitch", "pitch_range", "volume", "seed")


class EspeakError(RuntimeError):
    """espeak-ng could not be loaded, initialized, or refused a request."""


class _Event(ctypes.Structure):
    # espeak_EVENT; only passed through, never read.
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


def _libc_srand():
    """libc's ``srand`` (espeak-ng's breath noise uses libc ``rand``), or None."""
    try:
        srand = ctypes.CDLL(None).srand
    except (OSError, AttributeError, TypeError):
        return None
    srand.argtypes = [ctypes.c_uint]
    srand.restype = None
    return srand


class _Engine:
    """The process's espeak-ng engine (use :func:`_engine`)."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as error:
            raise EspeakError(
                "espeak: the package 'espeakng-loader' is not installed; it ships the "
                "espeak-ng library and its data (pip install espeakng-loader)"
            ) from error
        lib_path = espeakng_loader.get_library_path()
        try:
            data_path = espeakng_loader.get_data_path()
            lib = ctypes.CDLL(lib_path)
        except (OSError, RuntimeError) as error:
            raise EspeakError(f"espeak: cannot load the espeak-ng library {lib_path}: {error}") from error
        lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        # espeak-ng >= 1.52 seeds its own noise generator from the clock; this resets it.
        self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is not None:
            self._set_seed.argtypes = [ctypes.c_long]
            self._set_seed.restype = None
        self._srand = _libc_srand()

        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _espeakINITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EspeakError(f"espeak: espeak_Initialize failed (returned {rate}) with the data folder {data_path}")
        if rate != SAMPLE_RATE:
            raise EspeakError(f"espeak: expected espeak-ng to synthesize at {SAMPLE_RATE} Hz, it reports {rate} Hz")
        self.lib = lib
        self.sample_rate = rate
        self.lock = threading.Lock()
        self._chunks: List[np.ndarray] = []
        # Keep a reference to the callback: ctypes does not, and espeak-ng calls it.
        self._callback = _CALLBACK(self._collect)
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, numsamples, events) -> int:
        if wav and numsamples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0  # continue synthesis

    def synthesize(
        self,
        text: str,
        voice: str,
        rate: int,
        pitch: int,
        pitch_range: int,
        volume: int,
        seed: int,
    ) -> np.ndarray:
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise EspeakError(f"espeak: unknown voice {voice!r}")
            for parameter, value in (
                (_espeakRATE, rate),
                (_espeakVOLUME, volume),
                (_espeakPITCH, pitch),
                (_espeakRANGE, pitch_range),
            ):
                if self.lib.espeak_SetParameter(parameter, int(value), 0) != _EE_OK:
                    raise EspeakError(f"espeak: cannot set parameter {parameter} to {value}")
            if self._set_seed is not None:
                self._set_seed(int(seed))
            if self._srand is not None:
                self._srand(int(seed) & 0xFFFFFFFF)
            data = text.encode("utf-8") + b"\0"
            buffer = ctypes.create_string_buffer(data, len(data))
            self._chunks = []
            try:
                status = self.lib.espeak_Synth(buffer, len(data), 0, _POS_CHARACTER, 0, _espeakCHARS_UTF8, None, None)
                if status != _EE_OK:
                    raise EspeakError(f"espeak: espeak_Synth failed with status {status}")
                self.lib.espeak_Synchronize()
                chunks = self._chunks
            finally:
                self._chunks = []
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(chunks).astype(np.int16, copy=False)


_ENGINE: Optional[_Engine] = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    global _ENGINE
    if _ENGINE is None:
        with _ENGINE_LOCK:
            if _ENGINE is None:
                _ENGINE = _Engine()
    return _ENGINE


def sample_rate() -> int:
    """The sample rate of the synthesized audio, as espeak-ng reports it (22050).

    Example
    -------
    >>> sample_rate()
    22050
    """
    return _engine().sample_rate


def _check_range(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"espeak: {name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"espeak: {name} must be in [{low}, {high}], got {value}")
    return int(value)


def _request(
    text: str,
    voice: str = "en",
    rate: int = 175,
    pitch: int = 50,
    pitch_range: int = 50,
    volume: int = 100,
    seed: int = 0,
) -> Dict[str, Any]:
    """A checked synthesis request (the arguments of :func:`synthesize_int16`)."""
    if not isinstance(text, str):
        raise TypeError(f"espeak: text must be a str, got {type(text).__name__}")
    if not isinstance(voice, str) or not voice:
        raise ValueError(f"espeak: voice must be a non-empty str, got {voice!r}")
    return {
        "text": text,
        "voice": voice,
        "rate": _check_range("rate", rate, 80, 450),
        "pitch": _check_range("pitch", pitch, 0, 100),
        "pitch_range": _check_range("pitch_range", pitch_range, 0, 100),
        "volume": _check_range("volume", volume, 0, 200),
        "seed": _check_range("seed", seed, 0, 2**31 - 1),
    }


def synthesize_int16(
    text: str,
    voice: str = "en",
    rate: int = 175,
    pitch: int = 50,
    pitch_range: int = 50,
    volume: int = 100,
    seed: int = 0,
) -> np.ndarray:
    """Synthesize ``text`` as espeak-ng's raw 16-bit samples at :data:`SAMPLE_RATE`.

    Arguments are those of :func:`synthesize`.

    Returns
    -------
    numpy.ndarray
        ``int16``, shape ``(num_samples,)``.
    """
    request = _request(text, voice, rate, pitch, pitch_range, volume, seed)
    return _engine().synthesize(**request)


def synthesize(
    text: str,
    voice: str = "en",
    rate: int = 175,
    pitch: int = 50,
    pitch_range: int = 50,
    volume: int = 100,
    seed: int = 0,
) -> np.ndarray:
    """Synthesize ``text`` with espeak-ng, in this process.

    Arguments
    ---------
    text : str
        What to say (UTF-8; plain text, no SSML).
    voice : str
        An espeak-ng voice name, optionally with a variant: ``"en"``, ``"en-us+f3"``,
        ``"en-gb-scotland+m2"``, ``"en+klatt"``, ...
    rate : int
        Speaking rate in words per minute, 80 to 450 (175 is espeak-ng's default).
    pitch : int
        Base pitch, 0 to 100 (50 is the voice's normal pitch).
    pitch_range : int
        Pitch range, 0 (monotone) to 100 (50 is normal).
    volume : int
        Amplitude, 0 to 200 (100 is normal; more may distort).
    seed : int
        Seed of espeak-ng's noise generators (breathy and Klatt voices).

    Returns
    -------
    numpy.ndarray
        ``float32`` in [-1, 1), shape ``(num_samples,)``, at :data:`SAMPLE_RATE` Hz.
        Not byte-reproducible from call to call (see the module's docstring; use
        :func:`synthesize_batch` for that).

    Example
    -------
    >>> synthesize("hi", voice="no-such-voice")
    Traceback (most recent call last):
      ...
    speechbrain_s4m.data.espeak.EspeakError: espeak: unknown voice 'no-such-voice'
    """
    samples = synthesize_int16(text, voice, rate, pitch, pitch_range, volume, seed)
    return samples.astype(np.float32) / 32768.0


# ------------------------------------------------------------------ reproducible batches

# The worker is this file run on its own (not as part of the package, which would
# import torch): a fresh process, so a fresh espeak-ng state.
_WORKER_CODE = (
    "import importlib.util, sys\n"
    "sys.path.pop(0)\n"
    "spec = importlib.util.spec_from_file_location('_s4m_espeak_worker', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "module._worker_main()\n"
)


def _worker_main() -> None:
    """Worker side of :func:`synthesize_batch`: requests (JSON) on stdin; for each,
    an 8-byte little-endian sample count then the int16 little-endian samples on stdout."""
    requests = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    out = sys.stdout.buffer
    for request in requests:
        samples = synthesize_int16(**request)
        out.write(struct.pack("<q", samples.size))
        out.write(samples.astype("<i2", copy=False).tobytes())
    out.flush()


def synthesize_batch(requests: Sequence[Dict[str, Any]]) -> List[np.ndarray]:
    """Synthesize several requests, in order, in a fresh worker process.

    The output depends only on ``requests`` (byte for byte), whatever this process
    synthesized before. Calls from several threads run in parallel (one worker process
    each).

    Arguments
    ---------
    requests : sequence of dict
        Keyword arguments of :func:`synthesize_int16` (``text`` required; ``voice``,
        ``rate``, ``pitch``, ``pitch_range``, ``volume``, ``seed`` optional).

    Returns
    -------
    list of numpy.ndarray
        ``int16`` samples at :data:`SAMPLE_RATE`, one per request.

    Example
    -------
    >>> a, b = synthesize_batch([{"text": "one"}, {"text": "one", "voice": "en+f2"}])
    >>> a.dtype, len(a) > 0, len(b) > 0
    (dtype('int16'), True, True)
    """
    checked = []
    for request in requests:
        unknown = set(request) - set(_REQUEST_KEYS)
        if unknown:
            raise TypeError(f"espeak: unknown request keys {sorted(unknown)}")
        checked.append(_request(**request))
    if not checked:
        return []
    process = subprocess.run(
        [sys.executable, "-c", _WORKER_CODE, os.path.abspath(__file__)],
        input=json.dumps(checked).encode("utf-8"),
        capture_output=True,
        check=False,
    )
    if process.returncode != 0:
        message = process.stderr.decode("utf-8", "replace").strip().splitlines()
        raise EspeakError(
            "espeak: the synthesis worker failed"
            + (f": {message[-1]}" if message else f" (exit status {process.returncode})")
        )
    data = process.stdout
    results, offset = [], 0
    for _ in checked:
        (count,) = struct.unpack_from("<q", data, offset)
        offset += 8
        samples = np.frombuffer(data, dtype="<i2", count=count, offset=offset)
        results.append(samples.astype(np.int16))
        offset += 2 * count
    if offset != len(data):
        raise EspeakError("espeak: malformed output from the synthesis worker")
    return results
