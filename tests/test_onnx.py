"""ONNX exports: a clean graph, OpenCV DNN parity, the int8 file, built-in model names."""

import numpy as np
import pytest

from conftest import random_image
from test_export import export_cli
from test_inference import tiny_generator

import keras_derain.export as export
import keras_derain.inference as inference
from keras_derain.data.images import read_rgb
from keras_derain.export import ExportError, export_generator, reference_output, resolve_model
from keras_derain.inference import Derainer, reflect_pad_array
from keras_derain.onnx_graph import op_histogram

quiet = {"log": lambda line: None}


@pytest.fixture(scope="module")
def pix2pix(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    generator = tiny_generator(norm="instance", seed=3)
    generator.save(root / "tiny.keras")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "CALIBRATION_COUNT", 3)  # rendering drops is the slow part
        report = export_generator(root / "tiny.keras", root / "out", ["onnx", "onnx-int8"], **quiet)
    return generator, report


def as_float(photo):
    return photo[None].astype(np.float32) / 127.5 - 1


def test_graph_is_standard_ops(pix2pix):
    generator, report = pix2pix
    ops = op_histogram(report["onnx"]["path"])
    norms = sum(type(layer).__name__ == "GroupNormalization" for layer in generator.layers)
    assert ops["InstanceNormalization"] == norms
    assert ops["Transpose"] == 2  # NHWC in and out, none between convolutions
    assert not set(ops) & {"Shape", "Slice", "Reshape", "Pad", "Gather", "Cast"}  # no run-time size arithmetic
    assert report["onnx"]["ops"] == ops


def test_opencv_dnn_matches_keras_on_an_odd_size(pix2pix):
    cv2 = pytest.importorskip("cv2")
    generator, report = pix2pix
    rainy = as_float(random_image(37, 53, seed=4))
    reference = reference_output(generator, rainy)
    padded, (top, left) = reflect_pad_array(rainy, 8)  # the caller pads (metadata: required_multiple)
    net = cv2.dnn.readNetFromONNX(str(report["onnx"]["path"]))
    net.setInput(padded)
    generated = net.forward()[:, top : top + 37, left : left + 53]
    assert np.abs(generated - reference).max() < 1e-3
    assert report["onnx"]["opencv_max_abs_diff"] < 1e-3


def test_int8_export_runs_through_derainer(pix2pix):
    generator, report = pix2pix
    ops = op_histogram(report["onnx-int8"]["path"])
    assert ops["QuantizeLinear"] and ops["DequantizeLinear"]
    photo = read_rgb(export._BUILTIN / "kodim05.jpg")[100:137, 200:253]  # a photo: what it was calibrated on
    derained = Derainer(report["onnx-int8"]["path"]).derain(photo)
    assert derained.shape == photo.shape and derained.dtype == np.uint8
    reference = reference_output(generator, as_float(photo))[0]
    assert np.abs(derained / 127.5 - 1 - reference).mean() < 0.05
    assert report["onnx-int8"]["psnr"] > 25


def test_int8_quantises_the_inner_convolutions_only(pix2pix):
    import onnx

    from keras_derain.export import outer_convolutions

    _, report = pix2pix
    graph = onnx.load(str(report["onnx"]["path"])).graph
    convolutions = [node.name for node in graph.node if node.op_type in ("Conv", "ConvTranspose")]
    assert outer_convolutions(onnx.load(str(report["onnx"]["path"]))) == [convolutions[0], convolutions[-1]]
    quantised = onnx.load(str(report["onnx-int8"]["path"])).graph
    dequantised = {output for node in quantised.node if node.op_type == "DequantizeLinear" for output in node.output}
    weights_quantised = [node.input[1] in dequantised for node in quantised.node
                         if node.op_type in ("Conv", "ConvTranspose")]
    # The first and the last convolution keep float weights; every other one reads int8 weights.
    assert weights_quantised == [False] + [True] * (len(convolutions) - 2) + [False]


def test_restoration_generator_exports_cleanly(tmp_path):
    from keras_derain.models import restoration_generator

    generator = restoration_generator(base_channels=4, depth=2)
    # Untrained, it is the identity: random weights make the check say something.
    rng = np.random.default_rng(0)
    generator.set_weights([rng.normal(0, 0.1, weight.shape).astype(np.float32) for weight in generator.get_weights()])
    generator.save(tmp_path / "restoration.keras")
    report = export_generator(tmp_path / "restoration.keras", tmp_path / "out", "onnx", **quiet)
    ops = report["onnx"]["ops"]
    assert ops["Resize"] == 3 and ops["Transpose"] == 2 and "Shape" not in ops
    # Each per-pixel LayerNorm is its static element-wise ops, without the identity Reshape tf2onnx leaves.
    assert "Reshape" not in ops and ops["ReduceMean"] == 2 * ops["Reciprocal"] > 0
    assert report["onnx"]["max_abs_diff"] < 1e-4
    photo = random_image(21, 30, seed=2)
    reference = reference_output(generator, as_float(photo))[0]
    generated = Derainer(report["onnx"]["path"]).derain_float(as_float(photo)[0])
    assert np.abs(generated - reference).max() < 1e-4 and np.abs(reference).max() > 0.1


def test_builtin_names_come_from_the_weights_folder(tmp_path, monkeypatch):
    from keras_derain.compact import save_compact

    save_compact(tiny_generator(norm="instance", seed=1), tmp_path / "generator.f16.npz")
    (tmp_path / "lens.f16.npz").write_bytes((tmp_path / "generator.f16.npz").read_bytes())
    monkeypatch.setattr(inference, "DEFAULT_WEIGHTS_DIR", tmp_path)
    assert inference.builtin_models() == {"default": tmp_path / "generator.f16.npz", "lens": tmp_path / "lens.f16.npz"}
    assert resolve_model("lens") == tmp_path / "lens.f16.npz"
    with pytest.raises(ExportError, match="built in: default, lens"):
        resolve_model("rain")
    report = export_generator("lens", tmp_path / "out", "onnx", **quiet)  # a compact .npz exports too
    assert report["onnx"]["max_abs_diff"] < 1e-4


def test_cli_without_model_or_runs_says_what_to_pass(tmp_path, capsys):
    assert export_cli.main(["--runs-dir", str(tmp_path / "runs")]) == 2
    error = capsys.readouterr().err
    assert "pass --model NAME (built in: default" in error and ".npz" in error


def _reshape_chain_model(final_shape):
    """[N, 1, H, W] -> Unsqueeze -> Reshape -> Squeeze -> Reshape(final_shape) -> Relu, like tf2onnx leaves."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    constants = {
        "axes": np.array([0], np.int64),
        "six": np.array([1, 1, -1, 0, 0, 1], np.int64),
        "final": np.array(final_shape, np.int64),
    }
    nodes = [
        helper.make_node("Unsqueeze", ["x", "axes"], ["a"]),
        helper.make_node("Reshape", ["a", "six"], ["b"]),
        helper.make_node("Squeeze", ["b", "axes"], ["c"]),
        helper.make_node("Reshape", ["c", "final"], ["d"]),
        helper.make_node("Relu", ["d"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


@pytest.mark.parametrize("final_shape, identity", [([-1, 1, 0, 0], True), ([0, 0, -1, 1], False)])
def test_reshape_chains_are_dropped_only_where_they_come_back_to_their_shape(final_shape, identity):
    import onnxruntime

    from keras_derain.onnx_graph import _Graph, drop_identity_reshapes

    model = _reshape_chain_model(final_shape)
    x = np.random.default_rng(0).normal(size=(2, 1, 3, 5)).astype(np.float32)
    before = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    graph = _Graph(model)
    assert drop_identity_reshapes(graph) == int(identity)
    graph.prune()
    after = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(after, before)
    assert ("Reshape" in op_histogram(model)) != identity


def test_restoration_generator_with_the_global_head_exports_cleanly(tmp_path):
    from keras_derain.models import restoration_generator

    generator = restoration_generator(base_channels=4, depth=2, global_head=True)
    rng = np.random.default_rng(1)
    generator.set_weights([rng.normal(0, 0.1, weight.shape).astype(np.float32) for weight in generator.get_weights()])
    generator.save(tmp_path / "global.keras")
    report = export_generator(tmp_path / "global.keras", tmp_path / "out", "onnx", **quiet)
    assert report["onnx"]["max_abs_diff"] < 1e-4
    photo = random_image(21, 30, seed=3)
    reference = reference_output(generator, as_float(photo))[0]
    generated = Derainer(report["onnx"]["path"]).derain_float(as_float(photo)[0])
    assert np.abs(generated - reference).max() < 1e-4 and np.abs(reference).max() > 0.1
