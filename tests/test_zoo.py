"""The reference zoo in models/zoo: integrity, validity, accuracy, and the equality task.

Needs no torch: only onnx, onnxruntime, numpy and the torch-free parts of ``models``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # models/ is not an installed package; import it from the repo
    sys.path.insert(0, str(ROOT))

from models import equality_task, load_manifest, load_split, zoo_dir  # noqa: E402
from scmopt.ops.cost import count_flops, count_params  # noqa: E402

BASE_MODELS = {"mlp_digits", "cnn_digits", "resnet_digits", "mobile_digits", "equality_mlp"}
DYNAMO_MODELS = {"mlp_digits_dynamo", "cnn_digits_dynamo"}
KEYS = {
    "name", "file", "sha256", "calib", "calib_sha256", "test", "test_sha256", "params", "flops",
    "test_accuracy", "exporter", "opset", "inputs", "outputs", "task",
}  # fmt: skip

MANIFEST = load_manifest()
BY_NAME = {e["name"]: e for e in MANIFEST}
ENTRIES = [pytest.param(e, id=e["name"]) for e in MANIFEST]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _logits(entry: dict, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    model = onnx.load(zoo_dir() / entry["file"])
    data = load_split(entry["name"], split)
    return _session(model).run(["logits"], {"input": data["input"]})[0], data["y"]


def test_manifest_lists_all_models():
    assert set(BY_NAME) == BASE_MODELS | DYNAMO_MODELS
    assert len(MANIFEST) == len(BY_NAME)
    for e in MANIFEST:
        assert KEYS <= set(e), KEYS - set(e)
        if e["name"] in DYNAMO_MODELS:
            base = BY_NAME[e["name"].removesuffix("_dynamo")]
            assert e["exporter"] == "dynamo" and e["variant_of"] == base["name"]
            assert (e["calib"], e["test"]) == (base["calib"], base["test"])
        else:
            assert e["exporter"] == "torchscript" and e["opset"] == 17
            assert (e["calib"], e["test"]) == (f"{e['name']}_calib.npz", f"{e['name']}_test.npz")


def test_manifest_written_sorted_and_indented():
    text = (zoo_dir() / "manifest.json").read_text()
    assert text == json.dumps(MANIFEST, indent=2, sort_keys=True) + "\n"


def test_zoo_is_small_and_self_contained():
    files = {p.name for p in zoo_dir().iterdir()}
    listed = {e[k] for e in MANIFEST for k in ("file", "calib", "test")} | {"manifest.json"}
    assert files == listed  # no external-data side files, nothing stale
    assert sum((zoo_dir() / f).stat().st_size for f in files) < 10e6


@pytest.mark.parametrize("entry", ENTRIES)
def test_sha256_matches_manifest(entry):
    for key in ("file", "calib", "test"):
        digest_key = "sha256" if key == "file" else f"{key}_sha256"
        assert _sha256(zoo_dir() / entry[key]) == entry[digest_key], entry[key]


@pytest.mark.parametrize("entry", ENTRIES)
def test_model_is_valid_with_declared_interface(entry):
    model = onnx.load(zoo_dir() / entry["file"])
    onnx.checker.check_model(model, full_check=True)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer), (
        "weights must be embedded"
    )
    opset = {o.domain: o.version for o in model.opset_import}
    assert opset.get("", opset.get("ai.onnx")) == entry["opset"]
    declared_io = ((model.graph.input, entry["inputs"]), (model.graph.output, entry["outputs"]))
    for values, declared in declared_io:
        got = [
            {
                "name": v.name,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            }
            for v in values
        ]
        assert got == declared
    assert [i["name"] for i in entry["inputs"]] == ["input"]
    assert [o["name"] for o in entry["outputs"]] == ["logits"]
    assert isinstance(entry["inputs"][0]["shape"][0], str), "batch axis must be dynamic"


@pytest.mark.parametrize("entry", ENTRIES)
def test_data_files(entry):
    in_shape = entry["inputs"][0]["shape"][1:]
    for split in ("calib", "test"):
        data = load_split(entry["name"], split)
        assert set(data) == {"input", "y"}
        x, y = data["input"], data["y"]
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert list(x.shape[1:]) == in_shape and len(x) == len(y)
        assert np.isfinite(x).all()
    assert len(load_split(entry["name"], "calib")["y"]) == 1024
    n_test = len(load_split(entry["name"], "test")["y"])
    assert n_test == (2000 if entry["task"] == "hierarchical_equality" else 450)


@pytest.mark.parametrize("entry", ENTRIES)
def test_accuracy_reproduced_in_onnxruntime(entry):
    logits, y = _logits(entry)
    assert logits.dtype == np.float32 and logits.shape[0] == len(y)
    acc = float((logits.argmax(axis=1) == y).mean())
    assert acc == pytest.approx(entry["test_accuracy"], abs=1e-9)
    assert acc >= 0.95
    # Dynamic batch: a single sample gives the same logits as inside the full batch.
    model = onnx.load(zoo_dir() / entry["file"])
    x = load_split(entry["name"], "test")["input"]
    one = _session(model).run(["logits"], {"input": x[3:4]})[0]
    np.testing.assert_allclose(one[0], logits[3], atol=1e-5)


@pytest.mark.parametrize("entry", ENTRIES)
def test_recorded_cost_matches_scmopt_cost(entry):
    model = onnx.load(zoo_dir() / entry["file"])
    assert count_params(model) == entry["params"] > 0
    assert count_flops(model) == entry["flops"] > 0


@pytest.mark.parametrize("name", sorted(DYNAMO_MODELS))
def test_dynamo_variants_are_dynamo_exports_of_the_same_network(name):
    dyn, base = BY_NAME[name], BY_NAME[name.removesuffix("_dynamo")]
    m_dyn = onnx.load(zoo_dir() / dyn["file"])
    m_ts = onnx.load(zoo_dir() / base["file"])
    assert dyn["opset"] >= 18 and dyn["opset"] != base["opset"]
    assert m_dyn.ir_version > m_ts.ir_version
    # TorchScript names nodes by module scope ("/fc1/Gemm"); the dynamo exporter "node_<op>...".
    assert all(n.name.startswith("/") for n in m_ts.graph.node)
    assert all(n.name.startswith("node_") for n in m_dyn.graph.node)
    assert len(m_dyn.graph.value_info) > 0 and len(m_ts.graph.value_info) == 0
    assert (dyn["params"], dyn["flops"]) == (base["params"], base["flops"])
    np.testing.assert_allclose(_logits(dyn)[0], _logits(base)[0], atol=1e-4)


def test_equality_high_level_vars_explain_labels():
    entry = BY_NAME["equality_mlp"]
    assert entry["task"] == "hierarchical_equality"
    for split in ("calib", "test"):
        data = load_split("equality_mlp", split)
        v1, v2 = equality_task.high_level_vars(data["input"])
        np.testing.assert_array_equal(equality_task.high_level_output(v1, v2), data["y"])
        # Balanced labels, and every (v1, v2) combination occurs often.
        assert 0.45 < data["y"].mean() < 0.55
        for a in (False, True):
            for b in (False, True):
                assert ((v1 == a) & (v2 == b)).mean() > 0.2


def test_equality_inputs_come_from_the_entity_vocabulary():
    x = load_split("equality_mlp", "test")["input"]
    vocab = equality_task.entities()
    for part in equality_task.split_entities(x):
        dist = np.abs(part[:, None, :] - vocab[None, :, :]).max(axis=2).min(axis=1)
        assert (dist == 0).all()


def test_equality_sample_is_deterministic_and_seeded():
    x1, y1 = equality_task.sample(50, seed=7)
    x2, y2 = equality_task.sample(50, seed=7)
    x3, _ = equality_task.sample(50, seed=8)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert x1.dtype == np.float32 and x1.shape == (50, 16) and y1.dtype == np.int64


def test_equality_counterfactual_on_constructed_example():
    e = equality_task.entities()
    base = np.concatenate([e[0], e[0], e[1], e[2]])[None]  # v1 = T, v2 = F -> y = 0
    source = np.concatenate([e[3], e[4], e[5], e[5]])[None]  # v1 = F, v2 = T -> y = 0
    cf = equality_task.counterfactual
    assert equality_task.high_level_vars(base) == (np.array([True]), np.array([False]))
    assert cf(base, source, []).tolist() == [0]  # no intervention: base label
    assert cf(base, source, "v1").tolist() == [1]  # (F, F)
    assert cf(base, source, ["v2"]).tolist() == [1]  # (T, T)
    assert cf(base, source, ("v1", "v2")).tolist() == [0]  # source's variables: source label
    with pytest.raises(ValueError):
        cf(base, source, "v3")
    with pytest.raises(ValueError):
        cf(base, np.concatenate([source, source]), "v1")


def test_equality_counterfactual_vectorised_matches_definition():
    base, _ = equality_task.sample(500, seed=11)
    source, _ = equality_task.sample(500, seed=12)
    b1, b2 = equality_task.high_level_vars(base)
    s1, s2 = equality_task.high_level_vars(source)
    np.testing.assert_array_equal(equality_task.counterfactual(base, source, "v1"), s1 == b2)
    np.testing.assert_array_equal(equality_task.counterfactual(base, source, "v2"), b1 == s2)


def test_zoo_loading_code_does_not_import_torch():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import models, models.equality_task, models.datasets, scmopt.ops.cost; "
        "models.load_manifest(); models.load_split('cnn_digits', 'test'); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code, str(ROOT)], check=True, cwd=ROOT)
