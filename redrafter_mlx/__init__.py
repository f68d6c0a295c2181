"""ReDrafter (arXiv 2403.09919) speculative decoding on Apple MLX.

The public API, used by the demos and experiments:

  engine = Engine.load("qwen2.5-coder-1.5b")          # or an MLX directory; ModelFiles.open + Engine.from_files
  stats = Stats()
  for tokens in engine.generate(engine.encode("..."), max_tokens=128, options=DecodeOptions(beam=BeamShape(2, 5)),
                                stats=stats):
      ...
"""

from . import _blas  # noqa: F401  (must run before mlx.core is imported)
from .decode.beam_search import BeamShape
from .decode import DecodeOptions
from .engine import Engine, ModelFiles
from .policy import CPU, GPU, DecodePolicy
from .decode.sampling import SamplingParams
from .decode.stats import Stats

__version__ = "0.1.0"
__all__ = ["BeamShape", "CPU", "DecodeOptions", "DecodePolicy", "Engine", "GPU", "ModelFiles", "SamplingParams",
           "Stats"]
