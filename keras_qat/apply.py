"""apply_retrain_config: validate, walk, calibrate, quantize. The input model is never modified."""

from keras_qat._keras import keras
from keras_qat.calibration.collect import calibrate
from keras_qat.config.validate import read_retrain_config
from keras_qat.errors import ConfigError
from keras_qat.graph.model_check import checked_model
from keras_qat.graph.output_plan import plan_output_quantizers
from keras_qat.graph.recursion import with_graph_recursion_room
from keras_qat.graph.shared_inputs import returned_on_grid, shared_input_readers
from keras_qat.graph.walker import GraphRebuilder
from keras_qat.quantizers import TrackedRangeQuantizer, UlqQuantizer
from keras_qat.quantizers.introspection import output_range_vars, quantized_layers
from keras_qat.quantizers.ranges import bits_of
from keras_qat.quantizers.wrapper import separable_depthwise


@with_graph_recursion_room
def apply_retrain_config(model, config, calibration_data=None):
    """Returns a QAT copy of `model` quantized as `config` says.

    Every check (model, then config, then calibration data) runs before the
    model is copied. Clip bounds the config does not give are initialised by
    IFMR over `batch_num` batches of `calibration_data` on the float model
    (BatchNormalization folded).

    Args:
        model: A tf_keras or Keras 3 Sequential or Functional model (not
            modified). A Keras 3 model is rebuilt as tf_keras first, layer
            names kept; the QAT model is a tf_keras model either way.
        config: Path to a config.json, the parsed dict, or the `RetrainConfig`
            `read_retrain_config` returned.
        calibration_data: A `tf.data.Dataset`, a generator of batches (x or
            (x, y)), or an array (NumPy or tf.Tensor) holding the whole
            calibration set, split into `batch_num` batches; for a model with
            several inputs a list or dict of arrays, for one input also `[x]`
            or `(x,)`. Needed unless the config gives every enabled layer its
            clip bounds. Defaults to `None`.

    Returns:
        A new tf_keras Functional model, ready for `compile` and `fit`.

    Raises:
        UnsupportedModelError: if the model cannot be quantized.
        ConfigError: if the config is invalid, or calibration data is needed
            and missing.
        DataError: if the calibration data does not fit the model, or holds
            (or makes the model compute) NaN or Inf values.
    """
    model = checked_model(model)
    retrain = read_retrain_config(config, model)
    # Keyed by quantized input: a layer name, or `name/rhs` for a product's second input.
    owners = retrain.enabled_inputs()
    fixed_min = {key: retrain.resolved_fixed_min[key] for key in owners}
    to_calibrate = [
        key
        for key, name in owners.items()
        if retrain.layers[name].retrain_data_config.clip_max is None
    ]
    if to_calibrate and calibration_data is None:
        raise ConfigError(
            "calibration_data is needed to initialise the clip bounds of layers without "
            f"clip_max/clip_min in the config. Received: calibration_data=None for {to_calibrate}"
        )
    float_copy = GraphRebuilder(model, retrain, fixed_min, quantize=False)
    float_model = float_copy.build()
    # Layers reading one tensor share its input quantizer when these are equal.
    data_settings = {
        key: (retrain.layers[name].retrain_data_config, fixed_min[key])
        for key, name in owners.items()
    }
    data_bits = {
        key: bits_of(retrain.layers[name].retrain_data_config.dst_type)
        for key, name in owners.items()
    }
    shared_inputs = shared_input_readers(float_model, data_settings, data_bits)
    plan = plan_output_quantizers(float_model, set(retrain.enabled_layers), set(shared_inputs))
    # The QAT model rounds before such an activation (its output quantizer's), not after
    # it, and its wrapper writes the activation's output: the readers' shared quantizer
    # reads the wrapper (none on a fixed grid, which they read as it is).
    for name, layer_name in float_copy.output_activations.items():
        plan.tensors.pop(name, None)
        if name in shared_inputs:
            shared_inputs[layer_name] = shared_inputs.pop(name)
    # A shared quantizer is calibrated once, as its first reader's.
    later_readers = {name for names in shared_inputs.values() for name in names[1:]}
    clip_ranges, output_ranges = {}, {}
    tracked = [*plan.wrappers, *plan.tensors]  # names of the layers whose output is tracked
    # The int8 tensor inside each SeparableConv2D, between its two ops.
    between = {
        name: separable_depthwise(layer, layer.input, layer.depthwise_kernel.numpy())
        for name in retrain.enabled_layers
        if isinstance(layer := float_model.get_layer(name), keras.layers.SeparableConv2D)
    }
    if calibration_data is not None and (to_calibrate or tracked or between):
        calibrated = [name for name in to_calibrate if name not in later_readers]
        settings = {
            key: (bits_of(retrain.layers[owners[key]].retrain_data_config.dst_type), fixed_min[key])
            for key in calibrated
        }
        inputs = {name: float_copy.layer_inputs[name] for name in calibrated}
        # A layer called at several places has one range for the calls it rounds.
        outputs = {
            name: [
                node.outputs
                for index, node in enumerate(float_model.get_layer(name).inbound_nodes)
                if index not in plan.unrounded_calls.get(name, ())
            ]
            for name in tracked
        }
        outputs.update({(name, "between"): [tensor] for name, tensor in between.items()})
        clip_ranges, output_ranges = calibrate(
            float_model, inputs, settings, calibration_data, retrain.batch_num, outputs
        )
    builder = GraphRebuilder(
        model,
        retrain,
        fixed_min,
        quantize=True,
        output_bounds=plan.wrappers,
        shared_inputs=shared_inputs,
        returned_on_grid=returned_on_grid(float_model, data_settings, shared_inputs),
        operation_bounds=plan.tensors,
        file_activations=plan.activations,
        scalar_operations=plan.scalar_operations,
        swish_products=plan.swish_products,
        resized_on_reader=plan.resized_on_reader,
        read_raw=plan.read_raw,
        joined_on_grid=plan.joined_on_grid,
        compared_on_reader=plan.compared_on_reader,
        unrounded_calls=plan.unrounded_calls,
    )
    qat_model = builder.build()
    # By layer name: the wrapper of a model output a quantizer returns has another.
    wrappers = quantized_layers(qat_model)[1]
    for key, (clip_max, clip_min) in clip_ranges.items():
        layer = builder.input_quantizers.get(key)  # none on a fixed grid (see the walker)
        if layer is not None and not layer.follows_pooling:
            UlqQuantizer.assign_clip_range(layer.quantizer_vars, clip_min, clip_max)
    for name, (low, high) in output_ranges.items():
        if isinstance(name, tuple):
            variables = wrappers[name[0]].intermediate_vars
        elif name in builder.output_quantizers:
            variables = builder.output_quantizers[name].quantizer_vars
        else:
            variables = output_range_vars(wrappers[name])
        TrackedRangeQuantizer.assign_range(variables, low, high)
    return qat_model
