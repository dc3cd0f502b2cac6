"""A clean ONNX graph of a generator: standard ops where tf2onnx leaves shape arithmetic.

Keras' ``model.export(format="onnx")`` (tf2onnx underneath) converts every
layer faithfully but, for inputs of any height and width, spells three layers
as dozens of small ops that compute sizes at run time:

- ``GroupNormalization(groups=-1)`` (instance norm) reshapes to 5-D and back
  with run-time shapes, and the reshapes pin the layout transposes next to it;
- ``Conv2DTranspose(padding="same")`` becomes a ``ConvTranspose`` without pads
  followed by a run-time ``Slice`` and ``Pad`` (tf2onnx's fallback whenever the
  input size is unknown), although the crop is the same for every size;
- ``UpSampling2D`` (nearest) becomes ``Tile`` and ``Reshape`` with run-time
  shapes.

OpenCV's DNN module loads such a graph and computes wrong outputs, and
onnxruntime spends its time on the shape arithmetic. The path here:

1. `export_twin`: the generator rebuilt with stock-op twins of two layers, with
   the same weights and the same function (instance norm as mean and variance
   over height and width, without the 5-D reshape; nearest 2x upsampling as
   TensorFlow's ``ResizeNearestNeighbor``). It is what ``model.export``
   converts; parity with the original generator is checked by the caller.
2. `simplify`: three rewrites of tf2onnx's output, each recognised by its data
   path and the Keras layer it came from, each replacing run-time arithmetic
   whose result is fixed by the layer's configuration: the instance norm
   becomes one ``InstanceNormalization``; the transposed convolution gets its
   static pads (TensorFlow's "same": ``kernel - stride`` in all, the smaller half
   first) and loses the ``Slice``/``Pad``; the resize takes fixed ``scales``.
   No library does these: the sizes are symbolic, so the onnx optimizer and
   onnxruntime's constant folding cannot prove the arithmetic constant.
3. tf2onnx's own graph optimizer (``GraphUtil.optimize_model_proto``) then
   cancels the layout transposes that the rewrites freed; the reshapes it
   leaves after each per-channel mean come back to the mean's shape and are
   dropped (`drop_identity_reshapes`, with shapes from
   ``onnx.shape_inference``), and unused nodes are dropped.

The restoration generator's per-pixel LayerNorm (over channels) stays as eight
static element-wise ops (``ReduceMean`` over axis 1, ``Sub``, ``Mul``, ``Sqrt``,
``Reciprocal``, ...): ONNX's ``LayerNormalization`` normalises every axis from
``axis`` to the last, which in NCHW would take height and width too, so there is
no single standard op for it without layout transposes around each norm.

What is left of the shipped Pix2Pix generator: one ``Transpose`` at the input
and one at the output (the file keeps the NHWC contract), convolutions,
``InstanceNormalization``, activations and ``Concat``. The padding to a
multiple of the stride is outside the graph (see `keras_derain.export`).

Example:
    >>> from keras_derain.onnx_graph import op_histogram
    >>> op_histogram("generator.onnx")  # doctest: +SKIP
    {'Conv': 7, 'ConvTranspose': 7, 'InstanceNormalization': 11, ...}
"""

import collections
import re

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="keras_derain")
class InstanceNormTwin(keras.layers.Layer):
    """Instance norm over height and width of NHWC, with ``gamma`` and ``beta``: the export twin of
    ``GroupNormalization(groups=-1)``, without its 5-D reshape (same weights, same function)."""

    def __init__(self, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = (input_shape[-1],)
        self.gamma = self.add_weight(shape=channels, initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=channels, initializer="zeros", name="beta")

    def call(self, features):
        mean = keras.ops.mean(features, axis=(1, 2), keepdims=True)
        centered = features - mean
        variance = keras.ops.mean(keras.ops.square(centered), axis=(1, 2), keepdims=True)
        return centered * keras.ops.rsqrt(variance + self.epsilon) * self.gamma + self.beta

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="keras_derain")
class NearestUpsampleTwin(keras.layers.Layer):
    """Nearest-neighbour upsampling of NHWC by an integer factor, as TensorFlow's resize op (the
    export twin of ``UpSampling2D(interpolation="nearest")``, which Keras spells as repeats)."""

    def __init__(self, factor=2, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, features):
        import tensorflow as tf

        size = tf.shape(features)[1:3] * self.factor
        # Asymmetric coordinates, floor: ONNX's plainest nearest resize, which OpenCV reads.
        return tf.raw_ops.ResizeNearestNeighbor(images=features, size=size, half_pixel_centers=False)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def _is_instance_norm(layer):
    if not isinstance(layer, keras.layers.GroupNormalization):
        return False
    channels = layer.gamma.shape[0] if layer.scale else None
    return layer.axis in (-1, 3) and layer.scale and layer.center and layer.groups in (-1, channels)


def _is_nearest_upsampling(layer):
    return (isinstance(layer, keras.layers.UpSampling2D) and layer.interpolation == "nearest"
            and layer.size[0] == layer.size[1] and layer.data_format == "channels_last")


def export_twin(generator):
    """The generator with `InstanceNormTwin` and `NearestUpsampleTwin` in place of their layers.

    Same layer names and weights; other layers are cloned unchanged. A
    generator without those layers comes back as it is.
    """
    if not any(_is_instance_norm(layer) or _is_nearest_upsampling(layer) for layer in generator.layers):
        return generator

    def clone(layer):
        if _is_instance_norm(layer):
            return InstanceNormTwin(epsilon=layer.epsilon, name=layer.name)
        if _is_nearest_upsampling(layer):
            return NearestUpsampleTwin(factor=layer.size[0], name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    twin = keras.models.clone_model(generator, clone_function=clone)
    twin.set_weights(generator.get_weights())
    return twin


# -- ONNX rewrites -------------------------------------------------------------------------


def _layer_of(node_name, layers):
    """The Keras layer a tf2onnx node belongs to, from its name scope (``model_1/layer_1/op``)."""
    for segment in node_name.split("/")[:-1]:
        for candidate in (segment, re.sub(r"_\d+$", "", segment)):
            if candidate in layers:
                return layers[candidate]
    return None


class _Graph:
    """Producers and consumers of an ONNX graph's tensors, for the rewrites below."""

    def __init__(self, model):
        self.model = model
        self.graph = model.graph
        self.constants = {init.name: init for init in self.graph.initializer}

    def consumers(self, tensor):
        return [node for node in self.graph.node if tensor in node.input]

    def producer(self, tensor):
        return next((node for node in self.graph.node if tensor in node.output), None)

    def rewire(self, old, new):
        """Every use of tensor ``old`` reads ``new`` instead (a graph output keeps its name)."""
        if old in {output.name for output in self.graph.output}:
            producer = self.producer(new)
            producer.output[list(producer.output).index(new)] = old
            for node in self.graph.node:
                node.input[:] = [old if name == new else name for name in node.input]
            return
        for node in self.graph.node:
            node.input[:] = [new if name == old else name for name in node.input]

    def add_constant(self, name, value):
        from onnx import numpy_helper

        name = _unique(name, self.constants)
        self.constants[name] = numpy_helper.from_array(np.asarray(value), name)
        self.graph.initializer.append(self.constants[name])
        return name

    def value(self, tensor):
        from onnx import numpy_helper

        if tensor in self.constants:
            return numpy_helper.to_array(self.constants[tensor])
        producer = self.producer(tensor)
        if producer is not None and producer.op_type == "Constant":
            from onnx import helper

            return numpy_helper.to_array(helper.get_attribute_value(producer.attribute[0]))
        return None

    def prune(self):
        """Drop nodes whose outputs nothing uses, then unused initializers."""
        needed = {output.name for output in self.graph.output}
        kept = []
        for node in reversed(list(self.graph.node)):
            if any(name in needed for name in node.output):
                kept.append(node)
                needed.update(node.input)
        del self.graph.node[:]
        self.graph.node.extend(reversed(kept))
        initializers = [init for init in self.graph.initializer if init.name in needed]
        del self.graph.initializer[:]
        self.graph.initializer.extend(initializers)
        self.constants = {init.name: init for init in initializers}


def _unique(name, taken):
    candidate, index = name, 0
    while candidate in taken:
        index += 1
        candidate = f"{name}_{index}"
    return candidate


def _reduce_axes(graph, node):
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == "axes":
            return sorted(helper.get_attribute_value(attribute))
    if len(node.input) > 1:  # opset 18: axes are an input
        axes = graph.value(node.input[1])
        return None if axes is None else sorted(axes.tolist())
    return None


def _absorb_helpers(graph, nodes, unscoped):
    """Add to ``nodes`` the unnamed helpers tf2onnx put between them (a transpose made a reshape)."""
    grown = True
    while grown:
        grown = False
        inside = {output for node in nodes for output in node.output}
        members = {id(node) for node in nodes}
        for helper_node in unscoped:
            if id(helper_node) in members:
                continue
            inputs = [tensor for tensor in helper_node.input if tensor and graph.value(tensor) is None]
            users = [user for output in helper_node.output for user in graph.consumers(output)]
            if inputs and all(tensor in inside for tensor in inputs) and users and all(
                    id(user) in members for user in users):
                nodes.append(helper_node)
                grown = True


def fuse_instance_norms(graph, layers):
    """Each `InstanceNormTwin`'s ops -> one ``InstanceNormalization`` (NCHW; transposes if NHWC)."""
    from onnx import helper

    scopes = collections.defaultdict(list)
    for node in graph.graph.node:
        layer = _layer_of(node.name, layers)
        if isinstance(layer, InstanceNormTwin):
            scopes[layer.name].append(node)
    unscoped = [node for node in graph.graph.node if _layer_of(node.name, layers) is None]
    fused = 0
    for name, nodes in scopes.items():
        layer = layers[name]
        _absorb_helpers(graph, nodes, unscoped)
        inside = {output for node in nodes for output in node.output}
        sources = {tensor for node in nodes for tensor in node.input
                   if tensor and tensor not in inside and graph.value(tensor) is None}
        members = {id(node) for node in nodes}
        used_outside = {tensor for node in graph.graph.node if id(node) not in members for tensor in node.input}
        used_outside |= {output.name for output in graph.graph.output}
        results = [output for node in nodes for output in node.output if output in used_outside]
        means = [node for node in nodes if node.op_type in ("ReduceMean", "GlobalAveragePool")]
        if len(sources) != 1 or len(results) != 1 or not means:
            continue
        # tf2onnx turns a mean over NCHW's height and width into GlobalAveragePool.
        axes = [2, 3] if means[0].op_type == "GlobalAveragePool" else _reduce_axes(graph, means[0])
        if axes not in ([1, 2], [2, 3]):
            continue
        (source,), (result,) = sources, results
        gamma = graph.add_constant(f"{name}/gamma", keras.ops.convert_to_numpy(layer.gamma).astype(np.float32))
        beta = graph.add_constant(f"{name}/beta", keras.ops.convert_to_numpy(layer.beta).astype(np.float32))
        new_nodes = []
        channels_last = axes == [1, 2]
        normalized_in = source
        if channels_last:
            normalized_in = f"{name}/to_nchw"
            new_nodes.append(helper.make_node("Transpose", [source], [normalized_in], perm=[0, 3, 1, 2],
                                              name=normalized_in))
        normalized = f"{name}/InstanceNormalization"
        new_nodes.append(helper.make_node("InstanceNormalization", [normalized_in, gamma, beta], [normalized],
                                          epsilon=float(layer.epsilon), name=normalized))
        if channels_last:
            new_nodes.append(helper.make_node("Transpose", [normalized], [f"{name}/to_nhwc"], perm=[0, 2, 3, 1],
                                              name=f"{name}/to_nhwc"))
        position = list(graph.graph.node).index(nodes[0])
        for offset, node in enumerate(new_nodes):
            graph.graph.node.insert(position + offset, node)
        graph.rewire(result, new_nodes[-1].output[0])
        fused += 1
    return fused


def static_transposed_conv_pads(graph, layers):
    """``ConvTranspose`` + run-time ``Slice`` (+ ``Pad``) of a "same" Conv2DTranspose -> static pads."""
    from onnx import helper

    folded = 0
    for node in list(graph.graph.node):
        layer = _layer_of(node.name, layers)
        if node.op_type != "ConvTranspose" or not isinstance(layer, keras.layers.Conv2DTranspose):
            continue
        if layer.padding != "same" or tuple(layer.dilation_rate) != (1, 1) or any(
                attribute.name in ("pads", "output_shape", "output_padding") for attribute in node.attribute):
            continue
        if any(kernel < stride for kernel, stride in zip(layer.kernel_size, layer.strides)):
            continue
        # Follow the data: layout transposes, then tf2onnx's crop (Slice) and its zero-row Pad.
        tensor, crop = node.output[0], []
        while True:
            data_users = [user for user in graph.consumers(tensor) if user.input[0] == tensor and user.op_type != "Shape"]
            if len(data_users) != 1 or data_users[0].op_type not in ("Transpose", "Slice", "Pad"):
                break
            user = data_users[0]
            if user.op_type in ("Slice", "Pad"):
                crop.append(user)
            elif crop:
                break
            tensor = user.output[0]
        if not crop or crop[0].op_type != "Slice":
            continue
        total = [kernel - stride for kernel, stride in zip(layer.kernel_size, layer.strides)]
        begin = [pad // 2 for pad in total]
        node.attribute.append(helper.make_attribute("pads", begin + [pad - first for pad, first in zip(total, begin)]))
        for step in crop:
            graph.rewire(step.output[0], step.input[0])
        folded += 1
    return folded


def _layer_upstream(graph, tensor, layers, kind, depth=4):
    """The first layer of type ``kind`` naming a node within ``depth`` producers of ``tensor``."""
    frontier = [tensor]
    for _ in range(depth):
        producers = [graph.producer(name) for name in frontier]
        producers = [node for node in producers if node is not None]
        for node in producers:
            layer = _layer_of(node.name, layers)
            if isinstance(layer, kind):
                return layer
        frontier = [name for node in producers for name in node.input if name]
    return None


def static_resize_scales(graph, layers):
    """``Resize`` with run-time ``sizes`` of a `NearestUpsampleTwin` -> fixed ``scales``.

    tf2onnx resizes in NCHW (its transposes around the op are what the optimizer moves), so the
    scales are ``[1, 1, factor, factor]``.
    """
    folded = 0
    for node in list(graph.graph.node):
        if node.op_type != "Resize" or len(node.input) != 4 or graph.value(node.input[3]) is not None:
            continue
        # tf2onnx's Resize is unnamed; the layer names the ops that compute its sizes.
        layer = _layer_upstream(graph, node.input[3], layers, NearestUpsampleTwin)
        if layer is None:
            continue
        scales = graph.add_constant(f"{layer.name}/scales", np.array([1, 1, layer.factor, layer.factor], np.float32))
        node.input[2] = scales
        del node.input[3]
        folded += 1
    return folded


_RESHAPES = ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity")


def drop_identity_reshapes(graph):
    """Remove chains of reshapes that end at their start's shape; return how many chains.

    tf2onnx's optimizer leaves, after a per-channel ``ReduceMean`` (keepdims) whose
    layout transpose it cancelled, either one ``Reshape`` (shape ``[-1, 1, 0, 0]`` on
    an ``[N, 1, H, W]`` tensor) or a chain ``Unsqueeze``, ``Reshape``, ``Squeeze``,
    ``Reshape`` that comes back to ``[N, 1, H, W]``. Reshape, Squeeze, Unsqueeze and
    Flatten never move an element, so a chain of them is the identity exactly when
    its output has its input's shape. The shapes come from ``onnx.shape_inference``
    (run by the caller); they are the same when every axis is the same number or
    the same symbol, except at most one axis: the element count is kept, so that
    one is equal too. Links inside a chain must have no other reader.
    """
    shapes = _inferred_shapes(graph)
    outputs = {output.name for output in graph.graph.output}
    dropped = 0
    for node in list(graph.graph.node):
        if node.op_type not in _RESHAPES or node.output[0] not in shapes:
            continue
        target, start, link = shapes[node.output[0]], None, node
        while link is not None and link.op_type in _RESHAPES:
            tensor = link.input[0]
            if _same_shape(shapes.get(tensor), target):
                start = tensor
            producer = graph.producer(tensor)
            if producer is None or tensor in outputs or len(graph.consumers(tensor)) != 1:
                break
            link = producer
        if start is not None:
            graph.rewire(node.output[0], start)
            dropped += 1
    return dropped


def _inferred_shapes(graph):
    """``{tensor: [int or symbol or None per axis]}`` for tensors whose rank the graph states."""
    shapes = {}
    for info in [*graph.graph.value_info, *graph.graph.input, *graph.graph.output]:
        if info.type.tensor_type.HasField("shape"):
            shapes[info.name] = [
                dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None)
                for dim in info.type.tensor_type.shape.dim
            ]
    return shapes


def _same_shape(first, second):
    """Whether two inferred shapes of tensors with equal element counts are provably the same."""
    if first is None or second is None or len(first) != len(second):
        return False
    unproven = [a is None or b is None or a != b for a, b in zip(first, second)]
    known_apart = any(isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(first, second))
    return not known_apart and sum(unproven) <= 1


def simplify(model, generator):
    """Apply the rewrites for ``generator``'s twin layers, then tf2onnx's optimizer; return counts."""
    import onnx
    from tf2onnx.graph import GraphUtil

    layers = {layer.name: layer for layer in generator.layers}
    graph = _Graph(model)
    counts = {
        "InstanceNormalization": fuse_instance_norms(graph, layers),
        "ConvTranspose pads": static_transposed_conv_pads(graph, layers),
        "Resize scales": static_resize_scales(graph, layers),
    }
    graph.prune()
    optimized = GraphUtil.optimize_model_proto(model, catch_errors=False)
    # The shapes that drop_identity_reshapes compares come from ONNX's own shape inference.
    optimized = onnx.shape_inference.infer_shapes(optimized)
    graph = _Graph(optimized)
    counts["identity Reshape removed"] = drop_identity_reshapes(graph)
    graph.prune()
    return optimized, counts


def op_histogram(model):
    """``{op type: count}`` of an ONNX model or file, most frequent first."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    return dict(collections.Counter(node.op_type for node in model.graph.node).most_common())
