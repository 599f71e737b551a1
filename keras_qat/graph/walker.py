"""Rebuilding a model's graph with quantizers: the graph walker.

The walker replays the original graph node by node (as tf_keras's Functional
model does when it runs) into a new Functional model made of copies of the
layers, so the input model is never touched. Nested Sequential/Functional
models are inlined, which puts every quantized layer's input in one graph
(calibration reads them there). A layer called at several places stays one
shared copy. For each enabled layer the walker inserts an
`InputQuantizeLayer` before it and wraps it in a `QatWrapper` (TFMOT's
`QuantizeWrapperV2`) with a `WeightQuantizeConfig`, which also quantizes
its output where `output_bounds` says; a BatchNormalization right after it
is folded into its weights, and an activation the converter does not fuse
becomes an Activation layer after it. The plans that make the QAT model
round where the .tflite rounds are carried out here too: an input quantizer
moved up to a tensor all readers share (`shared_inputs`), an
`OutputQuantizeLayer` after an Add or a fused ReLU (`operation_bounds`), a
`FileActivation` for an activation on a fixed int8 grid (`file_activations`).
A model output keeps its layer's name for whatever returns it (a quantizer
after the layer); the layer's copy (a wrapper's: the layer inside keeps it)
is renamed.
"""

import tensorflow as tf

from keras_qat import functional
from keras_qat._keras import keras
from keras_qat.attention_layers import AttentionContext, AttentionScores
from keras_qat.converter_facts import (
    keeps_scale,
    own_activation_fuses,
    resizes_bilinearly,
    scalar_operation,
)
from keras_qat.errors import UnsupportedModelError
from keras_qat.graph import bn_folding
from keras_qat.graph.model_check import iter_containers, model_layers
from keras_qat.layer_rebuild import UniqueNames
from keras_qat.layer_table import layer_spec, operand_keys, owner_of
from keras_qat.quantizers import (
    FileActivation,
    FileAdd,
    FileAttentionContext,
    FileAttentionScores,
    FileDot,
    FileMultiply,
    FilePReLU,
    FileResizeBilinear,
    FileResizing,
    FileScalarOperation,
    FileSubtract,
    InputQuantizeLayer,
    OutputQuantizeLayer,
    QatWrapper,
    ReaderGridLayer,
    UlqQuantizer,
    WeightQuantizeConfig,
)
from keras_qat.quantizers.file_activation import FIXED_GRID_ACTIVATIONS
from keras_qat.quantizers.file_arithmetic import grid_holder
from keras_qat.quantizers.hard_swish import product_operands
from keras_qat.quantizers.input_layer import pooling_source
from keras_qat.quantizers.quantize_config import initialize_weight_scales
from keras_qat.quantizers.wrapper import quantized_variables


def _check_graph(model):
    """Raises unless `model` and every nested model have a layer graph to replay."""
    for container in iter_containers(model):
        if not functional.is_graph_network(container):
            raise UnsupportedModelError(
                f"Sequential model '{container.name}' has no input shape yet; quantizing it "
                "needs its layer graph. Start it with `tf_keras.Input(shape)` or call "
                "`model.build(input_shape)` first."
            )
    for layer in model_layers(model):
        if isinstance(layer, keras.Model):  # a subclassed model nested as a layer
            raise UnsupportedModelError(
                f"Nested model '{layer.name}' is subclassed; keras_qat inlines nested models "
                "and needs their layer graph. Rebuild it with the Functional API."
            )


# Layers the QAT model computes as the file's int8 op in inference.
_FILE_OPS = {
    AttentionContext: FileAttentionContext,
    AttentionScores: FileAttentionScores,
    keras.layers.Add: FileAdd,
    keras.layers.Dot: FileDot,
    keras.layers.Multiply: FileMultiply,
    keras.layers.PReLU: FilePReLU,
    keras.layers.Subtract: FileSubtract,
}


def _file_op(layer):
    """The file-op class of a plain layer called once (`_FILE_OPS`, a bilinear resize), or None."""
    if not functional.called_once(layer):
        return None
    if resizes_bilinearly(layer):
        return FileResizing if isinstance(layer, keras.layers.Resizing) else FileResizeBilinear
    return _FILE_OPS.get(type(layer))


def plan_batch_norm_folds(model, enabled):
    """Finds the BatchNormalizations to fold: layer name -> BN layer.

    A BN is folded into an enabled layer when it is that layer's only
    consumer, both have a single call site, and it normalises the last axis.

    Args:
        model: The original model.
        enabled: Names of the layers that will be quantized.

    Returns:
        A dict from producing layer name to the BatchNormalization layer.
    """
    folds = {}
    for container in iter_containers(model):
        for producer, bn in functional.sole_reader_links(container):
            if (
                producer.name in enabled
                and functional.called_once(producer)
                and bn_folding.is_foldable_batch_norm(bn, producer)
            ):
                folds[producer.name] = bn
    return folds


def joined_poolings(model, rounding):
    """Names of the AveragePooling2D layers whose output a Concatenate joins, at any depth.

    Only those whose Concatenate a quantizer reads: that quantizer's grid
    is the one the file requantizes the pooling's output onto.

    Args:
        model: The original model.
        rounding: Names of the layers whose input is quantized, and of
            those followed by an `OutputQuantizeLayer`.

    Returns:
        A set of layer names.
    """
    joined = set()
    for container in iter_containers(model):
        readers = functional.consumers(container)
        for layer in container.layers:
            if isinstance(layer, keras.layers.AveragePooling2D) and any(
                isinstance(join, keras.layers.Concatenate)
                and (
                    join.name in rounding
                    or any(r is not None and r.name in rounding for r in readers.get(join.name, []))
                )
                for join in readers.get(layer.name, [])
            ):
                joined.add(layer.name)
    return joined


class GraphRebuilder:
    """Builds a copy of a model, float or quantized, per a validated config.

    Args:
        model: The original (checked) model.
        config: Its `RetrainConfig`.
        fixed_min: Layer name -> resolved `fixed_min` for every enabled layer.
        quantize: Insert quantizers (True) or build the float copy with BN
            folded, used for calibration (False).
        output_bounds: Layer name -> `(floor, ceiling)` of the layers that
            get an output quantizer in their wrapper (`OutputPlan.wrappers`).
            Defaults to none.
        shared_inputs: Producer name -> the input keys (`operand_keys`) of the
            quantized layers whose one input quantizer goes right after the
            producer, read by all its readers
            (`shared_inputs.shared_input_readers`). Defaults to none.
        returned_on_grid: Names of those producers, model outputs not
            quantized, for which the model returns the shared quantizer's
            output under the producer's name, its copy renamed
            (`shared_inputs.returned_on_grid`). Defaults to none.
        operation_bounds: Layer name -> `(floor, ceiling)` of the layers
            followed by an `OutputQuantizeLayer` (`OutputPlan.tensors`).
            Defaults to none.
        file_activations: `Activation` layer name -> activation, for those
            that become a `FileActivation` (`OutputPlan.activations`).
            Defaults to none.
        scalar_operations: TFOpLambda layer name -> `(kind, constant)`, for
            those that become a `FileScalarOperation`
            (`OutputPlan.scalar_operations`). Defaults to none.
        swish_products: Names of the TFOpLambda products that become a
            `FileMultiply` (`OutputPlan.swish_products`). Defaults to none.
        resized_on_reader: Names of the bilinear resize layers that become
            a `FileResizeBilinear` or `FileResizing` after a `ReaderGridLayer`
            (`OutputPlan.resized_on_reader`). Defaults to none.
        read_raw: Names of the layers that read the output of the layer
            before them unrounded by its `OutputQuantizeLayer`
            (`OutputPlan.read_raw`). Defaults to none.
        joined_on_grid: Names of the layers followed by a `ReaderGridLayer`
            (`OutputPlan.joined_on_grid`). Defaults to none.
        compared_on_reader: Names of the layers with a `ReaderGridLayer`
            before each input (`OutputPlan.compared_on_reader`). Defaults to
            none.
        unrounded_calls: Quantized layer name -> the calls whose wrapper skips its
            output quantizer (`OutputPlan.unrounded_calls`), counted in the order
            this replays them, which is the float copy's node order.
            Defaults to none.
    """

    def __init__(
        self,
        model,
        config,
        fixed_min,
        quantize,
        output_bounds=None,
        shared_inputs=None,
        returned_on_grid=(),
        operation_bounds=None,
        file_activations=None,
        scalar_operations=None,
        swish_products=(),
        resized_on_reader=(),
        read_raw=(),
        joined_on_grid=(),
        compared_on_reader=(),
        unrounded_calls=None,
    ):
        _check_graph(model)
        self.model = model
        self.layers = {name: config.layers[name] for name in config.enabled_layers}
        self.fixed_min = fixed_min
        self.quantize = quantize
        self.folds = plan_batch_norm_folds(model, set(self.layers))
        self.folded_bns = {id(bn) for bn in self.folds.values()}
        self.names = UniqueNames(
            [layer.name for layer in model_layers(model)]
            + [container.name for container in iter_containers(model)]
        )
        self._copies = {}  # id(original layer) -> (original, copy, called copy)
        self.output_bounds = output_bounds or {}
        self.shared_inputs = shared_inputs or {}
        self.operation_bounds = operation_bounds or {}
        self.file_activations = file_activations or {}
        self.scalar_operations = scalar_operations or {}
        self.swish_products = set(swish_products)
        self.resized_on_reader = set(resized_on_reader) if quantize else set()
        self.read_raw = set(read_raw)
        self.joined_on_grid = set(joined_on_grid) if quantize else set()
        self.compared_on_reader = set(compared_on_reader) if quantize else set()
        self.unrounded_calls = unrounded_calls or {}
        self._calls_made = {}  # layer name -> how many of its calls were replayed
        self._unrounded = {}  # id of an OutputQuantizeLayer's output -> its input
        self.output_quantizers = {}  # layer name -> its OutputQuantizeLayer
        outputs = {functional.producing_layer(t).name for t in model.outputs}
        by_name = {layer.name: layer for layer in model_layers(model)}
        # Quantized layers whose activation the file computes as an op of its
        # own, on the int8 tensor the layer writes: the copy is linear and an
        # Activation layer follows, so that the layer's output can be rounded
        # as the file rounds it. A model output with weights keeps its name:
        # in the QAT model its activation goes into its output quantizer
        # (`ActivatedOutputQuantizer`), after the rounding. The float copy
        # splits that activation off too: the output plan and calibration
        # then see the tensor the output quantizer rounds, before it. A
        # function of the user's own stays in the layer.
        self._activations = {}  # name -> the Activation layer split out
        self._inner_activations = {}  # name -> the activation its output quantizer applies
        split, output_split = [], []
        for name in self.layers:
            activation = by_name[name].get_config().get("activation")
            if own_activation_fuses(by_name[name]) or not isinstance(activation, str):
                continue
            if name not in outputs:
                split.append(name)
            elif layer_spec(by_name[name]).has_weights:
                if not quantize:
                    output_split.append(name)
                elif name in self.output_bounds:
                    self._inner_activations[name] = activation
        self._split = {name: self.names(f"{name}_activation") for name in split + output_split}
        # The float copy's Activation layers that the QAT model's output quantizers
        # apply -> the layers they are split from.
        self.output_activations = {self._split[name]: name for name in output_split}
        # Input key of a quantized layer -> the input keys its shared quantizer reads for.
        self._sharing = {key: keys for keys in self.shared_inputs.values() for key in keys}
        self.input_quantizers = {}  # operand key -> InputQuantizeLayer
        self._joined_poolings = joined_poolings(model, {*self.layers, *self.operation_bounds})
        self._read_outputs = self._outputs_read_by_one_quantizer(outputs)
        self._returned_on_grid = set(returned_on_grid)
        # Model outputs rounded by an `OutputQuantizeLayer`: it takes the
        # output's name (which keys loss dicts), the layer's copy another.
        self._returned_rounded = set(self.operation_bounds) & outputs if quantize else set()
        self.layer_inputs = {}  # operand key -> its input tensors, one per call site
        self._before_sharing = {}  # id of a shared quantizer's output -> the model output
        # Id of a shared quantizer's output, or of a scale keeper's of it -> the keys it serves.
        self._read_shared = {}

    def _outputs_read_by_one_quantizer(self, outputs):
        """Names of the quantized model outputs that one input quantizer reads first.

        That is the quantizer of their one reader, a quantized layer, or one
        shared by their readers (`shared_inputs`). The file holds such a
        tensor once, on that quantizer's grid, and dequantizes it for the
        output (`WeightQuantizeConfig.output_on_reader`). Not so an output
        whose activation the file computes in float, after the layer's own
        int8 tensor: the file returns that float tensor.
        """
        in_float = {
            name
            for name, activation in self._inner_activations.items()
            if activation not in FIXED_GRID_ACTIVATIONS
        }
        read = set()
        for name, readers in functional.consumers(self.model).items():
            layers = [reader for reader in readers if reader is not None]
            one_reader = len(layers) == 1 and layers[0].name in self.layers
            if (
                name in outputs
                and name in self.layers
                and name not in in_float
                and (one_reader or name in self.shared_inputs)
            ):
                read.add(name)
        return read

    def build(self):
        """Returns the new Functional model, weights copied from the original."""
        names = functional.input_names(self.model)
        inputs = [
            keras.Input(type_spec=t.type_spec, name=name)
            for t, name in zip(self.model.inputs, names, strict=True)
        ]
        # A model input that a quantized layer shares with other readers is
        # rounded once, before all of them (no layer call to follow).
        read = [
            self._shared_quantizer(self.shared_inputs[name], tensor)
            if name in self.shared_inputs
            else tensor
            for tensor, name in zip(inputs, names, strict=True)
        ]
        outputs = functional.replay(self.model, read, self._call)
        # A model output keeps its layer's name: its readers' shared quantizer is theirs only.
        outputs = tf.nest.map_structure(lambda t: self._before_sharing.get(id(t), t), outputs)
        new_model = keras.Model(inputs, outputs, name=self.model.name)
        self._copy_weights()
        return new_model

    def _call(self, layer, args, kwargs):
        if isinstance(layer, keras.Model):
            return functional.replay(layer, tf.nest.flatten(args[0]), self._call)
        if id(layer) in self.folded_bns:
            return args[0]  # folded into the layer before it
        if layer.name in self.read_raw:
            args = (self._unrounded.get(id(args[0]), args[0]), *args[1:])
        copy = self._copy(layer)
        # TFOpLambda ops the QAT model computes as the file does, called on their tensors alone.
        if isinstance(copy, FileScalarOperation):
            args, kwargs = (scalar_operation(layer, args, kwargs)[2],), {}
        elif layer.name in self.swish_products and self.quantize:
            args, kwargs = (product_operands(layer, args, kwargs),), {}
        elif layer.name in self.resized_on_reader:
            rounding = ReaderGridLayer(name=self.names(f"{layer.name}_input_quant"))
            args = (rounding(args[0]), *args[1:])
        elif layer.name in self.compared_on_reader:
            args = (
                [
                    ReaderGridLayer(name=self.names(f"{layer.name}_input_quant"))(operand)
                    for operand in args[0]
                ],
                *args[1:],
            )
        if layer.name in self.layers:
            # An input whose quantizer is shared reads its output already.
            keys = operand_keys(layer.name, layer_spec(layer))
            if len(keys) == 1 and keys[0] not in self._read_shared.get(id(args[0]), ()):
                args = (self._quantized_input(keys, args[0]), *args[1:])
            elif len(keys) > 1:  # a product: each input on its own grid
                operands = zip(keys, args[0], strict=True)
                args = (
                    [
                        t
                        if k in self._read_shared.get(id(t), ())
                        else self._quantized_input((k,), t)
                        for k, t in operands
                    ],
                    *args[1:],
                )
        index = self._calls_made.get(layer.name, 0)
        self._calls_made[layer.name] = index + 1
        if index in self.unrounded_calls.get(layer.name, ()):
            kwargs = {**kwargs, "round_output": False}
        outputs = copy(*args, **kwargs)
        if keeps_scale(layer) and id(args[0]) in self._read_shared:
            self._read_shared[id(outputs)] = self._read_shared[id(args[0])]
        # The plans name the tensor the layer writes: its split activation's, if any.
        written = self._split.get(layer.name, layer.name)
        if layer.name in self._split:
            outputs = self._activation(layer)(outputs)
        if self.quantize and written in self.operation_bounds:
            returned = written in self._returned_rounded
            quantizer = OutputQuantizeLayer(
                *self.operation_bounds[written],
                name=written if returned else self.names(f"{written}_output_quant"),
            )
            self.output_quantizers[written] = quantizer
            rounded = quantizer(outputs)
            self._unrounded[id(rounded)] = outputs
            outputs = rounded
        if written in self.joined_on_grid:
            outputs = ReaderGridLayer(name=self.names(f"{written}_joined_quant"))(outputs)
        readers = self.shared_inputs.get(written)
        if readers is not None:
            shared = self._shared_quantizer(readers, outputs)
            self._before_sharing[id(shared)] = (
                keras.layers.Activation("linear", name=written)(shared)
                if written in self._returned_on_grid
                else outputs
            )
            outputs = shared
        return outputs

    def _shared_quantizer(self, keys, tensor):
        """`tensor` through the input quantizer that input keys `keys` share (`shared_inputs`).

        The calls of those layers that read its output, or the output of
        layers that keep the scale of it, do not round it again.
        """
        shared = self._quantized_input(keys, tensor)
        self._read_shared[id(shared)] = set(keys)
        return shared

    def _quantized_input(self, names, tensor):
        """Records `tensor` as the input of layers `names`; returns it through their quantizer.

        A tensor a `FileActivation` writes on its fixed grid (a softmax's,
        read by an attention product; a tanh's, behind a Flatten too) is read
        as it is: the file keeps that grid and drops a quantizer after it.
        An int8 average pooling's output that a Concatenate joins too is
        requantized once in the file, onto the concatenation's grid: its
        quantizer follows that grid (`InputQuantizeLayer`'s `follows_pooling`).
        """
        for name in names:
            self.layer_inputs.setdefault(name, []).append(tensor)
        if not self.quantize or getattr(grid_holder(tensor), "writes_fixed_grid", False):
            return tensor
        source = functional.producing_layer(tensor)
        follows = source.name in self._joined_poolings and pooling_source(tensor) is not None
        # A layer called at several places reads one quantizer at every call:
        # the one it shares with other readers at another call, if any.
        if len(names) == 1 and names[0] in self._sharing:
            names = self._sharing[names[0]]
        return self._input_quantizer(names, follows)(tensor)

    def _copy(self, layer):
        if id(layer) in self._copies:
            return self._copies[id(layer)][2]
        try:
            config = layer.get_config()
            if layer.name in self.folds:
                config = bn_folding.folded_config(layer)
            if layer.name in self._split or layer.name in self._inner_activations:
                config = {**config, "activation": "linear"}
            if layer.name in self.file_activations:
                activation = self.file_activations[layer.name]
                copy = FileActivation(activation, axis=config.get("axis", -1), name=layer.name)
            elif self.quantize and layer.name in self.scalar_operations:
                copy = FileScalarOperation(*self.scalar_operations[layer.name], name=layer.name)
            elif self.quantize and layer.name in self.swish_products:
                copy = FileMultiply(name=layer.name)
            elif self.quantize and (file_op := _file_op(layer)) is not None:
                copy = file_op.from_config(config)
            else:
                copy = type(layer).from_config(config)
        except Exception as e:  # any failure here means the layer cannot be copied
            raise UnsupportedModelError(
                f"Layer '{layer.name}' ({type(layer).__name__}) cannot be copied from its "
                f"config: {e}. Custom layers need get_config()/from_config()."
            ) from e
        called = copy
        entry = self.layers.get(layer.name)
        if self.quantize and entry is not None and entry.retrain_weight_config is not None:
            quantize_config = WeightQuantizeConfig.for_layer(
                layer,
                entry.retrain_weight_config,
                self.output_bounds.get(layer.name),
                self._inner_activations.get(layer.name),
                layer.name in self._read_outputs,
            )
            # The wrapper stands where the layer stood, under its name: the QAT
            # model's output names, which key loss dicts, stay the float model's.
            called = QatWrapper(copy, quantize_config, name=layer.name)
        # The layer returning a model output keeps the name; a wrapped copy
        # keeps it too (`quantized_layers` keys on it).
        if layer.name in self._returned_on_grid or layer.name in self._returned_rounded:
            called._name = self.names(f"{layer.name}_op")
        self._copies[id(layer)] = (layer, copy, called)
        return called

    def _activation(self, layer):
        """The Activation layer split out of quantized layer `layer`, made on first use."""
        name = self._split[layer.name]
        if name not in self._activations:
            activation = layer.get_config()["activation"]
            if name in self.file_activations:
                self._activations[name] = FileActivation(activation, name=name)
            else:
                self._activations[name] = keras.layers.Activation(activation, name=name)
        return self._activations[name]

    def _input_quantizer(self, names, follows_pooling=False):
        """The one `InputQuantizeLayer` of inputs `names` (equal settings), made on first use.

        `names` are `operand_keys`: layer names, or `name/rhs` for the second
        input of a product. `follows_pooling` is `InputQuantizeLayer`'s.
        """
        first = names[0]
        if first not in self.input_quantizers:
            data = self.layers[owner_of(first, self.layers)].retrain_data_config
            quantizer = UlqQuantizer(
                data.dst_type, self.fixed_min[first], data.clip_max, data.clip_min
            )
            layer = InputQuantizeLayer(
                quantizer,
                target=first if len(names) == 1 else list(names),
                follows_pooling=follows_pooling,
                name=self.names(f"{first}_input_quant"),
            )
            self.input_quantizers.update(dict.fromkeys(names, layer))
        return self.input_quantizers[first]

    def _copy_weights(self):
        for original, copy, called in self._copies.values():
            if original.name in self.folds:
                values = bn_folding.folded_weights(original, self.folds[original.name])
            else:
                values = original.get_weights()
            if called is copy:
                copy.set_weights(values)
                continue
            for variable, value in zip(quantized_variables(called), values, strict=True):
                variable.assign(value)
            initialize_weight_scales(called)
