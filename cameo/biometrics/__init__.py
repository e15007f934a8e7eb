"""The biometric pipeline: media loading (by content), the face encoders (dlib, insightface
packs), the voice encoder (Resemblyzer) with cameo's own speech checks and calibrated scoring,
video liveness (motion, splices, audio-visual sync) and the vector index.

Importing it is cheap: every model loads on first use.
"""

from ._pipeline import *  # noqa: F403 - the facade re-exports the pipeline's public names
from ._pipeline import __all__  # noqa: F401
