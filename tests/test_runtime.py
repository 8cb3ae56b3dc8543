"""Provider choice and batched runs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import padded_convnet

from scmopt.errors import ScmoptError
from scmopt.runtime import sessions as runtime


def test_auto_uses_cuda_only_when_it_really_loads():
    provs = runtime.providers("auto")
    assert provs[-1] == runtime.CPU
    assert (runtime.CUDA in provs) == runtime.cuda_available()


def test_cuda_request_without_device_is_a_clear_error():
    if runtime.cuda_available():
        pytest.skip("this machine has a working CUDA device")
    with pytest.raises(ScmoptError, match="CUDA"):
        runtime.providers("cuda")


def test_unknown_device():
    with pytest.raises(ScmoptError, match="unknown device"):
        runtime.providers("tpu")


def test_newest_ir_stamp_still_runs():
    model = padded_convnet()
    assert model.ir_version > 10  # written by the installed onnx
    sess = runtime.session(model, device="cpu")
    x = np.zeros((2, 3, 5, 5), np.float32)
    assert sess.run(None, {"x": x})[0].shape == (2, 4)


def test_run_batched_concatenates():
    sess = runtime.session(padded_convnet(), device="cpu")
    x = np.random.default_rng(0).normal(size=(10, 3, 5, 5)).astype(np.float32)
    whole = sess.run(None, {"x": x})[0]
    (batched,) = runtime.run_batched(sess, {"x": x}, batch_size=3)
    np.testing.assert_allclose(batched, whole, rtol=1e-6, atol=1e-6)


def test_session_without_arena_computes_the_same():
    x = np.random.default_rng(1).normal(size=(7, 3, 5, 5)).astype(np.float32)
    with_arena = runtime.session(padded_convnet(), device="cpu")
    without = runtime.session(padded_convnet(), device="cpu", arena=False)
    assert without.get_session_options().enable_cpu_mem_arena is False
    np.testing.assert_array_equal(with_arena.run(None, {"x": x})[0], without.run(None, {"x": x})[0])


def test_accepts_batch():
    x = {"x": np.zeros((3, 3, 5, 5), np.float32)}
    assert runtime.accepts_batch(padded_convnet(), x, "cpu")
