"""Load-time rewrites that put export idioms the analysis cannot follow into equivalent forms
it can (one rule per module, as onnxslim registers its patterns).

Each rule module has ``applies(model) -> bool``, a cheap test on the proto that decides
whether the graph is imported at all, and ``rewrite(graph) -> int``, which rewrites every match
in place on a shape-inferred graphsurgeon graph and returns how many. Every rule preserves the
function computed and the graph's inputs and outputs; each has a numeric test beside it
(tests/test_rewrites.py). Order matters: a rule may produce what a later one matches
(fused_qkv's Split is split_projection's input; token_gemm's MatMul is too).
"""

from __future__ import annotations

from scmopt.io.rewrites import fused_qkv, key_transpose, split_projection, token_gemm

RULES = (token_gemm, fused_qkv, split_projection, key_transpose)
