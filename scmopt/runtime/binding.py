"""One session type for every hot loop, provider-agnostic (issue 13: GPU ready).

`Session` wraps an onnxruntime InferenceSession. `run` is the session's own (numpy in and
out); `run_bound` runs through an IOBinding: inputs become OrtValues on the session's device,
outputs are allocated there and copied to the host once, and inputs named in `reuse` (a plan's
M and B, zero perturbations: the same array for many runs) are uploaded once and kept on the
device while the caller keeps passing the same array. The binding is on where the session
has CUDA (on the CPU provider it only adds copies, so `run_bound` is a plain run there unless
`bind` is set); both paths give the same numbers on the CPU provider (tested). No GPU was
available to measure the CUDA side. Both
count into the FPE ledger (runtime.work) when the session was made while one was active.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import onnxruntime as ort

from scmopt.runtime import work


class Session:
    """An InferenceSession with counted runs and an IOBinding path (see module docstring)."""

    def __init__(self, sess: ort.InferenceSession, share: float | None,
                 bind: bool | None = None) -> None:  # fmt: skip
        self._sess = sess
        self._share = share  # of the analysed model's MACs; None: not counted
        cuda = "CUDAExecutionProvider" in sess.get_providers()
        self.device = "cuda" if cuda else "cpu"
        # on the CPU provider the binding only adds copies (resnet_digits hooked pass: 1.16x
        # the time of run): it is used where a device is, or when asked for (tests)
        self.bind = cuda if bind is None else bind
        self._kept: dict[str, tuple[np.ndarray, ort.OrtValue]] = {}
        self.uploads = 0  # OrtValues made for reused inputs (tests: reuse really reuses)

    def _count(self, feeds: Mapping[str, Any]) -> None:
        ledger = work.active()
        if ledger is not None and self._share is not None:
            ledger.add(work.batch_of(self._sess, feeds), self._share)

    def run(self, output_names, input_feed, *args, **kwargs):
        self._count(input_feed)
        return self._sess.run(output_names, input_feed, *args, **kwargs)

    def run_bound(self, outputs: list[str], feeds: Mapping[str, np.ndarray],
                  reuse: Iterable[str] = ()) -> list[np.ndarray]:  # fmt: skip
        """`outputs` on `feeds` through an IOBinding on the session's device (a plain run when
        `bind` is off)."""
        if not self.bind:
            return self.run(outputs, dict(feeds))
        self._count(feeds)
        reuse = set(reuse)
        binding = self._sess.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, self._value(name, value, name in reuse))
        for name in outputs:
            binding.bind_output(name, self.device)
        self._sess.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def _value(self, name: str, value: np.ndarray, reuse: bool) -> ort.OrtValue:
        if reuse:
            held = self._kept.get(name)
            if held is not None and held[0] is value:
                return held[1]
        arr = np.ascontiguousarray(value)
        ov = ort.OrtValue.ortvalue_from_numpy(arr, self.device, 0)
        if reuse:
            self._kept[name] = (value, ov)  # the array is held: its identity stays valid
            self.uploads += 1
        return ov

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sess, name)
