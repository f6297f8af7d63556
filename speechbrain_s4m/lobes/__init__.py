"""SpeechBrain lobes: the S4 layer, the S4M mask networks and the waveform encoder."""

from speechbrain_s4m.lobes.encoder import WaveformEncoder
from speechbrain_s4m.lobes.s4 import S4
from speechbrain_s4m.lobes.s4m import S4MBlock, S4MMaskNet

__all__ = ["S4", "S4MBlock", "S4MMaskNet", "WaveformEncoder"]
