"""speechbrain-s4m: S4M speech separation as a SpeechBrain plugin."""

__version__ = "0.2.0"
