"""The ONNX "light" models shipped inside the onnx package, with random weights.

Their weights are ConstantOfShape placeholders (every value 0.02); we replace each by a random
initializer of the same shape, scaled so activations stay O(1) through deep stacks, so the
numerical comparisons in the tests mean something.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx.backend.test
from onnx import numpy_helper

LIGHT_DIR = os.path.join(os.path.dirname(onnx.backend.test.__file__), "data", "light")
NAMES = [
    "bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
    "shufflenet", "squeezenet", "vgg19", "zfnet512",
]  # fmt: skip


def light_model(name: str, seed: int = 0) -> onnx.ModelProto:
    """Loads light_<name>.onnx with its placeholder weights replaced by seeded random values."""
    model = onnx.load(os.path.join(LIGHT_DIR, f"light_{name}.onnx"))
    rng = np.random.default_rng(seed)
    inits = {i.name: i for i in model.graph.initializer}
    keep_nodes = []
    for node in model.graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in inits:
            keep_nodes.append(node)
            continue
        shape = numpy_helper.to_array(inits[node.input[0]]).astype(np.int64).tolist()
        if len(shape) >= 2:  # weights: fan-in scaling
            fan_in = int(np.prod(shape[1:]))
            val = rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)
        else:  # biases, BN scale/shift/mean/var: positive and near 1 keeps variances valid
            val = rng.uniform(0.5, 1.5, size=shape)
        tensor = numpy_helper.from_array(val.astype(np.float32), node.output[0])
        model.graph.initializer.append(tensor)
        model.graph.input.append(
            onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, shape)
        )
    del model.graph.node[:]
    model.graph.node.extend(keep_nodes)
    return model


def light_input(model: onnx.ModelProto, n: int = 1, seed: int = 1) -> dict[str, np.ndarray]:
    """Random inputs for the model's (non-initializer) graph inputs."""
    inits = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        shape[0] = n
        feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds
