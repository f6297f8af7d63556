"""Sample arithmetic shared by the PyTorch stream (:mod:`speechbrain_s4m.streaming`)
and the onnxruntime one (:mod:`speechbrain_s4m.onnx_runtime`); plain Python, so that
the runtime needs no torch.

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
