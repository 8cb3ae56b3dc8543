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

from models import equality_task, load_manifest, load_split, majority_task, zoo_dir  # noqa: E402
from scmopt.ops.cost import count_flops, count_params  # noqa: E402

BASE_MODELS = {
    "mlp_digits", "cnn_digits", "resnet_digits", "mobile_digits", "equality_mlp", "vit_digits",
    "text_encoder",
}  # fmt: skip
DYNAMO_MODELS = {
    "mlp_digits_dynamo", "cnn_digits_dynamo", "vit_digits_dynamo", "text_encoder_dynamo",
}  # fmt: skip
OPSET_VARIANTS = {"text_encoder_opset14": 14}  # TorchScript exports at another opset
TRANSFORMERS = {
    "vit_digits", "vit_digits_dynamo", "text_encoder", "text_encoder_opset14",
    "text_encoder_dynamo",
}  # fmt: skip
TOKEN_MODELS = {"text_encoder", "text_encoder_opset14", "text_encoder_dynamo"}
TOKEN_INPUTS = list(majority_task.INPUT_NAMES)  # input_ids, attention_mask: int64 [batch, seq]
N_TEST = {"hierarchical_equality": 2000, "hierarchical_majority": 2000, "digits": 450}
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


def _feeds(data: dict[str, np.ndarray], rows: slice = slice(None)) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in data.items() if k != "y"}


def _run(entry: dict, feeds: dict[str, np.ndarray]) -> np.ndarray:
    model = onnx.load(zoo_dir() / entry["file"])
    return _session(model).run(["logits"], feeds)[0]


def _logits(entry: dict, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    data = load_split(entry["name"], split)
    return _run(entry, _feeds(data)), data["y"]


def _weights(model: onnx.ModelProto) -> int:
    """Elements of the float tensors that are not scalars (the trained weights)."""
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute]
    return sum(
        int(np.prod(t.dims))
        for t in tensors
        if t.data_type == onnx.TensorProto.FLOAT and int(np.prod(t.dims)) > 1
    )


def _ops(entry: dict) -> dict[str, int]:
    model = onnx.load(zoo_dir() / entry["file"])
    counts: dict[str, int] = {}
    for n in model.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def test_manifest_lists_all_models():
    assert set(BY_NAME) == BASE_MODELS | DYNAMO_MODELS | set(OPSET_VARIANTS)
    assert len(MANIFEST) == len(BY_NAME)
    for e in MANIFEST:
        assert KEYS <= set(e), KEYS - set(e)
        if e["name"] in DYNAMO_MODELS or e["name"] in OPSET_VARIANTS:
            base = BY_NAME[e["variant_of"]]
            assert e["name"].startswith(base["name"] + "_")
            assert (e["calib"], e["test"]) == (base["calib"], base["test"])
            assert e["task"] == base["task"]
            assert e["test_accuracy"] == pytest.approx(base["test_accuracy"], abs=1e-9)
        else:
            assert e["variant_of"] is None
            assert (e["calib"], e["test"]) == (f"{e['name']}_calib.npz", f"{e['name']}_test.npz")
        if e["name"] in DYNAMO_MODELS:
            assert e["exporter"] == "dynamo"
            assert e["opset"] == 18 if e["name"] in TRANSFORMERS else e["opset"] >= 18
        else:
            assert e["exporter"] == "torchscript"
            assert e["opset"] == OPSET_VARIANTS.get(e["name"], 17)


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
    assert [o["name"] for o in entry["outputs"]] == ["logits"]
    assert all(isinstance(i["shape"][0], str) for i in entry["inputs"]), "batch must be dynamic"
    if entry["name"] in TOKEN_MODELS:
        assert [i["name"] for i in entry["inputs"]] == TOKEN_INPUTS
        for i in entry["inputs"]:
            assert i["dtype"] == "int64" and i["shape"] == ["batch", "seq"]
    else:
        assert [i["name"] for i in entry["inputs"]] == ["input"]
        assert entry["inputs"][0]["dtype"] == "float32"


@pytest.mark.parametrize("entry", ENTRIES)
def test_data_files(entry):
    for split in ("calib", "test"):
        data = load_split(entry["name"], split)
        assert set(data) == {i["name"] for i in entry["inputs"]} | {"y"}
        assert data["y"].dtype == np.int64
        for spec in entry["inputs"]:
            x = data[spec["name"]]
            assert x.dtype == np.dtype(spec["dtype"]) and len(x) == len(data["y"])
            fixed = [(a, d) for a, d in enumerate(spec["shape"]) if isinstance(d, int)]
            assert x.ndim == len(spec["shape"]) and all(x.shape[a] == d for a, d in fixed)
            assert x.dtype != np.float32 or np.isfinite(x).all()
    assert len(load_split(entry["name"], "calib")["y"]) == 1024
    assert len(load_split(entry["name"], "test")["y"]) == N_TEST[entry["task"]]


@pytest.mark.parametrize("entry", ENTRIES)
def test_accuracy_reproduced_in_onnxruntime(entry):
    logits, y = _logits(entry)
    assert logits.dtype == np.float32 and logits.shape[0] == len(y)
    acc = float((logits.argmax(axis=1) == y).mean())
    assert acc == pytest.approx(entry["test_accuracy"], abs=1e-9)
    assert acc >= 0.95
    # Dynamic batch: a single sample gives the same logits as inside the full batch.
    one = _run(entry, _feeds(load_split(entry["name"], "test"), slice(3, 4)))
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
    # (TorchScript's shape-constant nodes outside any module are "Constant_<k>".)
    assert all(n.name.startswith("/") for n in m_ts.graph.node if n.op_type != "Constant")
    assert all(n.name.startswith("node_") for n in m_dyn.graph.node)
    assert len(m_dyn.graph.value_info) > 0 and len(m_ts.graph.value_info) == 0
    assert dyn["flops"] == base["flops"] and _weights(m_dyn) == _weights(m_ts)
    if name not in TRANSFORMERS:  # scalar constants (sqrt(Dh), -10000, 0.5 ...) differ
        assert dyn["params"] == base["params"]
    np.testing.assert_allclose(_logits(dyn)[0], _logits(base)[0], atol=1e-4)


# --- transformers (issue 12): the graph patterns the exports must show ---


@pytest.mark.parametrize("name", sorted(TRANSFORMERS))
def test_transformer_exports_show_attention_ffn_and_layernorm(name):
    ops = _ops(BY_NAME[name])
    layers = 4
    assert ops["Softmax"] == layers  # explicit softmax attention, one per layer
    # per layer: q, k, v, out and the two FFN projections as MatMul(x[B,T,D], W), plus
    # q @ k^T and attn @ v
    assert ops["MatMul"] == 8 * layers
    assert ops["Erf"] == layers  # exact GELU decomposed: Div(sqrt 2) -> Erf -> Add -> Mul -> Mul
    # head split / merge: 3 splits + 1 merge per layer, K^T as one more Transpose
    assert ops["Reshape"] >= 4 * layers and ops["Transpose"] >= 4 * layers
    if BY_NAME[name]["opset"] >= 17:
        assert "ReduceMean" not in ops
        assert ops["LayerNormalization"] == 2 * layers + 1
    else:  # LayerNorm decomposed below opset 17: ReduceMean/Sub/Pow/Sqrt/Div
        assert "LayerNormalization" not in ops
        assert ops["ReduceMean"] == 2 * (2 * layers + 1)
        assert ops["Pow"] == ops["Sqrt"] == 2 * layers + 1
    if name.startswith("vit"):  # patch embedding Conv, class token Concat
        assert ops["Conv"] == 1 and ops["Concat"] >= 1 and ops["Expand"] == 1
    else:  # token + position embeddings Gather, padding mask Cast -> Sub -> Mul
        assert ops["Gather"] >= 2 and ops["Cast"] == 1 and ops["Sub"] >= 1
    if BY_NAME[name]["exporter"] == "torchscript":  # run-time Reshape targets from Shape(x)
        assert ops["Shape"] >= 4 and ops["Unsqueeze"] >= 4 * layers


def test_text_encoder_opsets_14_and_17_compute_the_same():
    fused, decomposed = BY_NAME["text_encoder"], BY_NAME["text_encoder_opset14"]
    assert decomposed["variant_of"] == "text_encoder" and decomposed["exporter"] == "torchscript"
    assert decomposed["flops"] == fused["flops"]
    np.testing.assert_allclose(_logits(decomposed)[0], _logits(fused)[0], atol=1e-4)


@pytest.mark.parametrize("name", sorted(TOKEN_MODELS))
def test_text_encoder_sequence_axis_is_dynamic_and_padding_masked(name):
    entry = BY_NAME[name]
    data = load_split(entry["name"], "test")
    feeds = _feeds(data, slice(0, 256))
    full = _run(entry, feeds)
    lengths = feeds["attention_mask"].sum(axis=1)
    short = lengths <= 16
    assert short.sum() > 20
    # Fewer positions: cutting padding columns off leaves the logits of short rows unchanged.
    cut = {k: np.ascontiguousarray(v[short, :16]) for k, v in feeds.items()}
    np.testing.assert_allclose(_run(entry, cut), full[short], atol=1e-5)
    # The mask is honoured: whatever token ids stand at masked positions, the logits stay.
    noisy = dict(feeds)
    rng = np.random.default_rng(0)
    junk = rng.integers(0, majority_task.VOCAB_SIZE, size=feeds["input_ids"].shape)
    noisy["input_ids"] = np.where(feeds["attention_mask"] == 1, feeds["input_ids"], junk)
    assert (noisy["input_ids"] != feeds["input_ids"]).any()
    np.testing.assert_allclose(_run(entry, noisy), full, atol=1e-5)
    # and it matters: unmasking the padding changes the logits
    unmasked = {**noisy, "attention_mask": np.ones_like(feeds["attention_mask"])}
    assert np.abs(_run(entry, unmasked) - full).max() > 1e-3


def test_majority_high_level_vars_explain_labels():
    entry = BY_NAME["text_encoder"]
    assert entry["task"] == "hierarchical_majority"
    for split in ("calib", "test"):
        data = load_split("text_encoder", split)
        v1, v2 = majority_task.high_level_vars(data)
        np.testing.assert_array_equal(majority_task.high_level_output(v1, v2), data["y"])
        assert 0.45 < data["y"].mean() < 0.55
        for a in (False, True):
            for b in (False, True):
                assert ((v1 == a) & (v2 == b)).mean() > 0.2


def test_majority_sequences_are_well_formed():
    data = load_split("text_encoder", "test")
    ids, mask = data["input_ids"], data["attention_mask"]
    assert ids.shape[1] == majority_task.SEQ_LEN
    np.testing.assert_array_equal(mask, (ids != majority_task.PAD).astype(np.int64))
    assert (ids[:, 0] == majority_task.CLS).all()
    assert ((ids == majority_task.SEP).sum(axis=1) == 2).all()
    assert (ids[:, -1] == majority_task.PAD).all()
    lengths = mask.sum(axis=1)
    assert (mask == (np.arange(ids.shape[1]) < lengths[:, None])).all()  # right padding
    assert lengths.min() < 16 < lengths.max()  # lengths vary: the segment boundary moves
    seg1, seg2 = majority_task.segments(ids)
    for seg in (seg1, seg2):
        n = seg.sum(axis=1)
        assert (n >= 3).all() and (n <= 10).all()
        marked = (((ids == majority_task.A) | (ids == majority_task.B)) & seg).sum(axis=1)
        assert (marked % 2 == 1).all()  # odd: no ties
    assert np.isin(ids, np.arange(majority_task.VOCAB_SIZE)).all()


def test_majority_sample_is_deterministic_and_seeded():
    x1, y1 = majority_task.sample(50, seed=7)
    x2, y2 = majority_task.sample(50, seed=7)
    x3, _ = majority_task.sample(50, seed=8)
    for k in majority_task.INPUT_NAMES:
        np.testing.assert_array_equal(x1[k], x2[k])
        assert x1[k].dtype == np.int64 and x1[k].shape == (50, majority_task.SEQ_LEN)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1["input_ids"], x3["input_ids"])


def test_majority_counterfactual_on_constructed_example():
    t = majority_task
    d = t.DISTRACTORS[0]

    def seq(seg1, seg2):
        ids = [t.CLS, *seg1, t.SEP, *seg2, t.SEP]
        return np.array([ids + [t.PAD] * (t.SEQ_LEN - len(ids))])

    base = seq([t.A, t.A, t.B, d], [t.B, d, d])  # v1 = T, v2 = F -> y = 0
    source = seq([t.B, d, d], [t.A, t.B, t.A, d, d])  # v1 = F, v2 = T -> y = 0
    cf = t.counterfactual
    assert t.high_level_vars(base) == (np.array([True]), np.array([False]))
    assert cf(base, source, []).tolist() == [0]
    assert cf(base, source, "v1").tolist() == [1]  # (F, F)
    assert cf(base, {"input_ids": source}, ["v2"]).tolist() == [1]  # (T, T)
    assert cf(base, source, ("v1", "v2")).tolist() == [0]
    with pytest.raises(ValueError):
        cf(base, source, "v3")
    with pytest.raises(ValueError):
        cf(base, np.concatenate([source, source]), "v1")


def test_majority_counterfactual_vectorised_matches_definition():
    base, _ = majority_task.sample(300, seed=11)
    source, _ = majority_task.sample(300, seed=12)
    b1, b2 = majority_task.high_level_vars(base)
    s1, s2 = majority_task.high_level_vars(source)
    np.testing.assert_array_equal(majority_task.counterfactual(base, source, "v1"), s1 == b2)
    np.testing.assert_array_equal(majority_task.counterfactual(base, source, "v2"), b1 == s2)


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
        "import models, models.equality_task, models.majority_task, models.datasets, "
        "scmopt.ops.cost; models.load_manifest(); models.load_split('cnn_digits', 'test'); "
        "models.load_split('text_encoder', 'test'); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code, str(ROOT)], check=True, cwd=ROOT)
