"""Frame arithmetic of the waveform encoder (kernel ``K``, stride ``S``, end
zero-padded), shared by the encoder, the PyTorch stream (:mod:`speechbrain_s4m.
inference.streaming`) and the onnxruntime runners (:mod:`speechbrain_s4m.inference.onnx_runtime`); plain
Python, so that the runtime needs no torch.

Authors
 * speechbrain-s4m contributors
"""


def final_frames(received: int, pending: int, kernel: int, stride: int) -> int:
    """Encoder frames that end a stream of ``received`` samples, of which ``pending``
    (from the next frame's first sample on) are not yet separated: the frames the
    offline encoder (kernel ``K``, stride ``S``, end zero-padded) adds to reach the last
    sample; one zero-padded frame for a signal shorter than one kernel.

    Example
    -------
    >>> final_frames(0, 0, 32, 8), final_frames(10, 10, 32, 8), final_frames(1000, 40, 32, 8)
    (0, 1, 2)
    """
    if received == 0:
        return 0
    if received < kernel:
        return 1
    return -(-(pending - kernel) // stride) + 1


def encoder_frames(samples: int, kernel: int, stride: int) -> int:
    """Frames the encoder makes of ``samples >= kernel`` samples: ``ceil((T - K) / S) + 1``
    (the end zero-padded so that the last frame reaches the last sample).

    Example
    -------
    >>> encoder_frames(32, 32, 8), encoder_frames(33, 32, 8), encoder_frames(8000, 32, 8)
    (1, 2, 997)
    """
    return -(-max(samples - kernel, 0) // stride) + 1


def whole_blocks(frames: int, block_frames: int) -> int:
    """``frames`` rounded up to whole blocks of ``block_frames``.

    Example
    -------
    >>> whole_blocks(997, 8), whole_blocks(8, 8)
    (1000, 8)
    """
    return -(-frames // block_frames) * block_frames
