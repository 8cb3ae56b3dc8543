"""scmopt: compile trained ONNX networks into sparse approximate causal abstractions.

>>> import scmopt
>>> result = scmopt.compress("model.onnx", "calib.npz", min_fidelity=0.99)  # doctest: +SKIP
>>> result.save("small.onnx")  # doctest: +SKIP
"""

__version__ = "0.1.0"

from scmopt.api import Result, analyze, compile, compress  # noqa: E402
from scmopt.errors import CompileMismatch, ScmoptError  # noqa: E402

__all__ = ["CompileMismatch", "Result", "ScmoptError", "analyze", "compile", "compress",
           "__version__"]  # fmt: skip
