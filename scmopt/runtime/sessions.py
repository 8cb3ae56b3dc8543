"""onnxruntime sessions: provider choice, threads, batched runs.

onnxruntime-gpu advertises CUDAExecutionProvider even on machines without a GPU and then
prints loud errors when a session asks for it. We only request CUDA when a device node exists
and a probe session really loads the provider with logging silenced.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator, Mapping

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from scmopt.errors import ScmoptError
from scmopt.runtime import work
from scmopt.runtime.binding import Session
from scmopt.runtime.shared_weights import SharedWeights

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def _has_nvidia_device() -> bool:
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """True when a CUDA session really initialises (checked once, quietly)."""
    if CUDA not in ort.get_available_providers() or not _has_nvidia_device():
        return False
    probe = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "probe",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
    )
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=[CUDA, CPU])
    except Exception:
        return False
    return CUDA in sess.get_providers()


def providers(device: str = "auto") -> list[str]:
    """Execution providers for `device` in {auto, cpu, cuda}."""
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if not cuda_available():
            raise ScmoptError("--device cuda requested but no working CUDA device was found")
        return [CUDA, CPU]
    if device == "auto":
        return [CUDA, CPU] if cuda_available() else [CPU]
    raise ScmoptError(f"unknown device {device!r} (expected auto, cpu or cuda)")


def session(
    model: onnx.ModelProto,
    device: str = "auto",
    threads: int | None = None,
    spinning: bool = True,
    arena: bool = True,
    shared: SharedWeights | None = None,
) -> Session:
    """An inference session for an in-memory model (no file round-trip), as a
    runtime.binding.Session (counted runs, an IOBinding path).

    `spinning=False` stops worker threads from busy-waiting after a run, which leaves the
    cores to numpy when analysis interleaves many short calls with array work. `arena=False`
    returns memory after each run instead of keeping the largest run's in a CPU arena.
    `shared`: the store the model's stripped initializers refer to (runtime.shared_weights).
    """
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.enable_cpu_mem_arena = arena
    if threads:
        opts.intra_op_num_threads = threads
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if shared is not None:
        opts.add_external_initializers(*shared.feeds_for(model))
    try:
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=providers(device))
        return Session(sess, work.share_for(model))  # counted in FPE when a ledger is active
    except Exception as exc:
        # Newer onnx writers stamp an IR version this onnxruntime cannot read; the graph itself
        # is usually fine at the highest IR it supports (the output model keeps its own IR).
        found = re.search(r"max supported IR version: (\d+)", str(exc))
        if not found or model.ir_version <= int(found.group(1)):
            raise
        lowered = onnx.ModelProto()
        lowered.CopyFrom(model)
        lowered.ir_version = int(found.group(1))
        sess = ort.InferenceSession(lowered.SerializeToString(), opts, providers=providers(device))
        return Session(sess, work.share_for(model))


def batch_probe(
    model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], device: str
) -> tuple[Session | None, str | None]:
    """(session, None) when `model` runs a batch of two samples and gives what it gives on each
    sample alone; else (None, reason). Never raises.

    The first two samples of `feeds` are used (one sample twice when there is only one).
    Some exports bake the batch size into shape tensors: such a model fails at batch two, or
    runs and mixes the samples (a Reshape to [1, -1] makes [1, 2F]); both are caught here.
    """
    pair = {k: np.concatenate([v[:1], v[1:2] if len(v) > 1 else v[:1]]) for k, v in feeds.items()}
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4
    try:
        sess = session(model, device, spinning=False)
        both = sess.run(None, pair, quiet)
        alone = [sess.run(None, {k: v[i : i + 1] for k, v in pair.items()}, quiet) for i in (0, 1)]
    except Exception as exc:  # onnxruntime raises several types for shape errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return None, f"does not run at batch 2: {first[:200]}"
    for k, out in enumerate(both):
        parts = [np.asarray(a[k]) for a in alone]
        want = np.concatenate(parts) if all(p.ndim for p in parts) else None
        out = np.asarray(out)
        if want is None or out.shape != want.shape:
            return None, f"output {k} at batch 2 has shape {out.shape}, not two samples"
        scale = float(np.abs(want).max()) if want.size and want.dtype.kind == "f" else 1.0
        if not np.allclose(out, want, rtol=1e-4, atol=1e-5 * max(scale, 1.0), equal_nan=True):
            return None, f"output {k} at batch 2 differs from the single-sample runs"
    return sess, None


def batched_session(
    model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], device: str
) -> Session | None:
    """A session for `model` when it runs on batches (see batch_probe), else None."""
    return batch_probe(model, feeds, device)[0]


def accepts_batch(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], device: str) -> bool:
    """True when the model runs a batch of two and gives the two single-sample results."""
    return batched_session(model, feeds, device) is not None


def batches(feeds: Mapping[str, np.ndarray], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Slices every array of `feeds` along axis 0 into batches of at most `batch_size`."""
    n = len(next(iter(feeds.values())))
    for start in range(0, n, batch_size):
        yield {k: v[start : start + batch_size] for k, v in feeds.items()}


def run_batched(
    sess: Session,
    feeds: Mapping[str, np.ndarray],
    batch_size: int = 256,
    outputs: list[str] | None = None,
) -> list[np.ndarray]:
    """Runs `sess` over `feeds` in batches and concatenates each output along axis 0."""
    parts: list[list[np.ndarray]] = []
    for batch in batches(feeds, batch_size):
        res = sess.run(outputs, batch)
        if not parts:
            parts = [[] for _ in res]
        for acc, r in zip(parts, res, strict=True):
            acc.append(r)
    return [np.concatenate(p, axis=0) for p in parts]


def return_memory() -> None:
    """Hands freed heap memory back to the OS (glibc's malloc_trim; a no-op elsewhere).
    onnxruntime sessions freed without it leave RSS where it was: 43 curvature-probe
    sessions of EfficientNet-Lite1 held 1.6 GB after their release until trimmed."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None
