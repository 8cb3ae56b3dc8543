"""Subgraph sessions on one shared copy of the weights give the numbers of self-contained ones."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from scmopt import units
from scmopt.analysis import curvature as curv
from scmopt.analysis.measure import Runner
from scmopt.runtime import sessions as runtime
from scmopt.runtime.shared_weights import MIN_ELEMENTS, SharedWeights, is_shared

ZOO = "models/zoo"


def _big(init: TensorProto) -> bool:
    return init.data_type == TensorProto.FLOAT and int(np.prod(init.dims)) >= MIN_ELEMENTS


def _load(name: str):
    model = onnx.load(f"{ZOO}/{name}.onnx")
    data = {k: v[:16] for k, v in np.load(f"{ZOO}/{name}_calib.npz").items() if k != "y"}
    return model, data


@pytest.mark.parametrize("name", ["cnn_digits", "resnet_digits", "vit_digits"])
def test_stripped_model_runs_like_the_original(name):
    model, data = _load(name)
    ref = runtime.session(model, device="cpu").run(None, data)
    store = SharedWeights()
    stripped = store.strip(copy.deepcopy(model))
    big = [i for i in model.graph.initializer if _big(i)]
    assert big and len(store.values) == len(big)
    assert sum(is_shared(i) for i in stripped.graph.initializer) == len(big)
    # small tensors stay inline (shape targets are read at load time)
    small = [i for i in stripped.graph.initializer if not is_shared(i)]
    assert all(i.data_location != TensorProto.EXTERNAL for i in small)
    assert stripped.ByteSize() < model.ByteSize() / 10
    got = runtime.session(stripped, device="cpu", shared=store).run(None, data)
    for a, b in zip(ref, got, strict=True):
        np.testing.assert_array_equal(a, b)


def test_two_models_of_one_graph_share_one_copy():
    model, _ = _load("cnn_digits")
    store = SharedWeights()
    store.strip(copy.deepcopy(model))
    first = dict(store.values)
    store.strip(copy.deepcopy(model))
    assert store.values.keys() == first.keys()
    assert all(store.values[k] is first[k] for k in first)
    assert store.nbytes == sum(v.numpy().nbytes for v in first.values())


def test_a_store_without_the_model_weights_is_an_error():
    model, _ = _load("cnn_digits")
    stripped = SharedWeights().strip(copy.deepcopy(model))
    with pytest.raises(KeyError, match="not in this SharedWeights"):
        runtime.session(stripped, device="cpu", shared=SharedWeights())


@pytest.mark.parametrize("name", ["mobile_digits", "text_encoder"])
def test_prober_on_shared_weights_gives_unshared_estimates(name):
    model, data = _load(name)
    ug = units.analyze(model)
    runner = Runner(ug, data, device="cpu")
    prober = curv.Prober(ug, runner.sites, device="cpu")
    assert all(is_shared(i) for s in prober.subs.values() for i in s.graph.initializer if _big(i))
    cache = prober.cache(data, prober.plan_feeds(None))
    cut = runner.sites[0]
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(3, *prober.base(cut, cache).shape)).astype(np.float32)
    shared = prober.directional(cut, cache, prober.plan_feeds(None), lambda i: dirs[i], 3, 1e-2)
    # the same subgraph with its weights inline, in a session of its own
    whole = curv.Prober(ug, runner.sites, device="cpu")
    inline = copy.deepcopy(whole.subs[cut])
    for init in inline.graph.initializer:
        if is_shared(init):
            init.CopyFrom(onnx.numpy_helper.from_array(whole.weights.values[init.name].numpy(),
                                                       init.name))  # fmt: skip
    whole.subs[cut] = inline
    whole.weights = SharedWeights()  # nothing shared: a stale reference would fail to load
    got = whole.directional(cut, cache, whole.plan_feeds(None), lambda i: dirs[i], 3, 1e-2)
    np.testing.assert_allclose(shared, got, rtol=0, atol=0)
