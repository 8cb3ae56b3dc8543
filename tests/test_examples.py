"""The models shipped inside the package are the zoo's files, byte for byte."""

from __future__ import annotations

import pytest

from models import zoo_dir
from scmopt import examples
from scmopt.errors import ScmoptError


@pytest.mark.parametrize("name", examples.names())
def test_shipped_examples_match_the_zoo(name):
    for kind, suffix in (("model", ".onnx"), ("data", "_calib.npz")):
        shipped = examples.resolve(f"example:{name}", kind)
        assert open(shipped, "rb").read() == (zoo_dir() / f"{name}{suffix}").read_bytes()


def test_unknown_example_is_a_clear_error():
    with pytest.raises(ScmoptError, match="no shipped example"):
        examples.resolve("example:nope", "model")


def test_plain_paths_pass_through():
    assert examples.resolve("model.onnx", "model") == "model.onnx"
