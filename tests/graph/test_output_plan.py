import numpy as np
import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.graph.output_plan import OutputPlan, plan_output_quantizers

L = keras.layers


def plan(outputs, inputs, enabled):
    return plan_output_quantizers(keras.Model(inputs, outputs), set(enabled))


def expected(wrappers, tensors):
    """A plan of output quantizers alone."""
    return OutputPlan(wrappers, tensors, {}, {}, set(), set(), set(), set(), set(), {})


def test_logits_and_the_input_of_a_global_pooling_are_planned():
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, name="c1")(inputs)
    x = L.ReLU(name="r1")(x)
    x = L.MaxPooling2D(name="p1")(x)  # keeps the scale: c2's quantizer ranges c1
    x = L.Conv2D(4, 3, activation="relu6", name="c2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(3, name="logits")(x)
    got = plan(outputs, inputs, ["c1", "c2", "logits"])
    assert got == expected({"c2": (0.0, 6.0), "logits": (None, None)}, {})


def test_a_fused_relu_layer_is_rounded_after_it():
    inputs = keras.Input((4,))
    x = L.Dense(4, name="d")(inputs)
    outputs = L.ReLU(name="r")(x)
    assert plan(outputs, inputs, ["d"]) == expected({}, {"r": (0.0, None)})


def test_relus_among_readers_of_a_dense_read_its_sums_and_a_convolutions_do_not():
    inputs = keras.Input((8, 8, 1))
    c = L.Conv2D(4, 3, name="c")(inputs)
    x = L.Flatten(name="flat")(L.ReLU(name="cr")(c))
    # `c`'s two ReLUs are RELU ops reading its int8 output. `d` is returned
    # and read by two ReLUs, the second's output by no quantizer: each is
    # fused into a copy of the FULLY_CONNECTED.
    d = L.Dense(4, name="d")(x)
    e = L.Dense(4, name="e")(L.ReLU(name="r1")(d))
    outputs = [d, e, L.ReLU(6.0, name="r2")(d), L.Dense(4, name="f")(L.ReLU(name="cr2")(c))]
    got = plan(outputs, inputs, ["c", "d", "e", "f"])
    assert got == OutputPlan(
        {"c": (None, None), "e": (None, None), "f": (None, None)},
        {"d": (None, None), "r2": (0.0, 6.0)},
        {},
        {},
        set(),
        set(),
        {"r1", "r2"},
        set(),
        set(),
        {},
    )


def test_a_relu_op_of_its_own_is_rounded_unless_a_quantizer_reads_it():
    inputs = keras.Input((8, 8, 1))
    a = L.Conv2D(4, 3, name="a")(inputs)
    b = L.Conv2D(4, 3, name="b")(inputs)
    joined = L.ReLU(name="r1")(L.Concatenate(name="cat")([a, b]))
    # A ReLU of a tensor read elsewhere too: not fused into `c`.
    c = L.Conv2D(4, 3, name="c")(joined)
    pooled = L.GlobalAveragePooling2D(name="gap")(L.ReLU(name="r2")(c))
    outputs = [pooled, L.Conv2D(4, 3, name="d")(L.ReLU(name="r3")(c)), c]
    got = plan(outputs, inputs, ["a", "b", "c", "d"])
    assert got == expected(
        {"c": (None, None), "d": (None, None)},
        {"cat": (None, None), "r2": (0.0, None), "gap": (None, None)},
    )


def test_a_tensor_a_concatenation_reads_beside_other_layers_is_joined_on_its_grid():
    inputs = keras.Input((8, 8, 1))
    a = L.Conv2D(4, 3, name="a")(inputs)
    b = L.Conv2D(4, 3, name="b")(inputs)
    total = L.Add(name="sum")([a, b])
    # `a` is read by a quantizer too (`c`): on that one's grid instead.
    joined = L.Concatenate(name="cat")([total, L.Add(name="twice")([total, b]), a])
    outputs = [L.Conv2D(4, 3, name="c")(a), L.Conv2D(4, 3, name="d")(joined)]
    got = plan(outputs, inputs, ["a", "b", "c", "d"])
    assert got.joined_on_grid == {"sum"}
    assert got.tensors == {}


def test_unfused_activation_is_planned_and_shared_tensors_are_not():
    inputs = keras.Input((4,))
    soft = L.Dense(4, activation="softmax", name="soft")(inputs)
    shared = L.Dense(4, name="shared")(inputs)
    reader = L.Dense(4, name="reader")(shared)
    added = L.Add(name="add")([shared, reader])
    outputs = L.Multiply(name="mul")([soft, added])
    # "shared" feeds a quantizer and an Add: the quantizer moves up to it
    # (`shared_inputs`). "reader" feeds only the Add: planned, and so are the
    # Add and the Multiply (an output), whose int8 outputs nothing rounds.
    # "soft" has an unfused activation, which the walker splits off: the op's
    # own int8 output, before the softmax op, is rounded in its wrapper.
    got = plan(outputs, inputs, ["soft", "shared", "reader"])
    assert got == expected(
        {"soft": (None, None), "reader": (None, None)},
        {"add": (None, None), "mul": (None, None)},
    )


def test_an_add_read_by_a_quantizer_or_before_the_first_one_is_not_planned():
    inputs = keras.Input((4,))
    front = L.Add(name="front")([inputs, inputs])  # float in the file
    a = L.Dense(4, name="a")(front)
    added = L.ReLU(name="relu")(L.Add(name="add")([a, L.Dense(4, name="b")(a)]))
    read = L.Add(name="read")([added, added])
    outputs = L.Dense(2, name="out")(read)
    got = plan(outputs, inputs, ["a", "b", "out"])
    assert got == expected({"b": (None, None), "out": (None, None)}, {"relu": (0.0, None)})


def test_inputs_of_a_concatenation_are_not_planned():
    inputs = keras.Input((4,))
    joined = L.Concatenate()([L.Dense(4, name="a")(inputs), L.Dense(4, name="b")(inputs)])
    outputs = L.Dense(2, name="out")(joined)
    assert plan(outputs, inputs, ["a", "b", "out"]) == expected({"out": (None, None)}, {})


def test_a_concatenation_no_quantizer_reads_is_planned_and_its_inputs_are_not():
    # Inception's last block: branches, one a concatenation itself, joined
    # and read by a global pooling. The file writes every branch on the
    # outer concatenation's one scale; the returned pooling, a MEAN, on a
    # range of its own.
    inputs = keras.Input((4, 4, 1))
    x = L.Conv2D(4, 1, name="stem")(inputs)
    inner = L.Concatenate(name="inner")([L.Conv2D(2, 1, name=f"b{i}")(x) for i in (1, 2)])
    joined = L.Concatenate(name="joined")([inner, L.Conv2D(2, 1, name="b3")(x)])
    outputs = L.GlobalAveragePooling2D(name="gap")(joined)
    got = plan(outputs, inputs, ["stem", "b1", "b2", "b3"])
    assert got == expected({}, {"joined": (None, None), "gap": (None, None)})


def test_disabled_readers_do_not_count_as_quantizers():
    inputs = keras.Input((4,))
    x = L.Dense(4, name="a")(inputs)
    outputs = L.Dense(4, name="b")(x)
    assert plan(outputs, inputs, ["a"]) == expected({"a": (None, None)}, {})


def test_fixed_grid_activations_after_the_first_quantizer_are_planned():
    inputs = keras.Input((4,))
    front = L.Activation("sigmoid", name="front")(inputs)  # float in the file
    x = L.Dense(4, name="a")(front)
    x = L.Activation("swish", name="sw")(x)
    x = L.Activation("gelu", name="g")(x)  # the file's GELU has a range of its own
    outputs = L.Dense(2, name="out")(x)
    got = plan(outputs, inputs, ["a", "out"])
    assert got.activations == {"sw": "swish"}
    assert got.tensors == {"sw": (None, None)}  # the MUL of swish has a range of its own


def test_adds_and_multiplies_by_numbers_are_planned_unless_a_hard_swish_fuses_them():
    inputs = keras.Input((4,))
    x = L.Dense(4, name="a")(inputs)
    swished = L.Multiply(name="swish")([x, L.ReLU(6.0, name="r1")(x + 3.0) * (1.0 / 6.0)])
    shifted = L.Dense(4, name="b")(swished) + 3.0
    clamped = tf.nn.relu6(shifted)
    gate = clamped / 6.0  # a Keras 3 hard sigmoid
    excited = L.Multiply(name="excite")([swished, gate])
    scaled = 0.5 * excited
    outputs = L.Dense(2, name="out")(tf.math.sqrt(scaled + 1.0))
    got = plan(outputs, inputs, ["a", "b", "out"])
    shifted, clamped, gate, scaled = (
        t._keras_history.layer.name for t in (shifted, clamped, gate, scaled)
    )
    # The hard swish is one op; the gate's add (its ReLU6 fused) and division
    # are int8 ops with a constant; so is `0.5 *`, but not the `+ 1`, which
    # a SQRT the QAT model does not know reads.
    assert got.scalar_operations == {
        shifted: ("add", 3.0),
        gate: ("multiply", np.float32(1) / np.float32(6)),
        scaled: ("multiply", 0.5),
    }
    assert got.tensors == {
        clamped: (0.0, 6.0),
        gate: (None, None),
        "excite": (None, None),
        scaled: (None, None),
    }
    assert got.swish_products == set()  # a Multiply layer: a FileMultiply anyway


def test_a_maximum_or_minimum_is_rounded_once_on_its_one_scale():
    # MAXIMUM and MINIMUM write their inputs on their output's scale: the
    # reader's grid ("max", read by "reader"), or a range of their own
    # ("min", a model output). The layers they join round nothing of their
    # own: a `ReaderGridLayer` before each operand rounds it on that scale.
    inputs = keras.Input((4,))
    a, b, c, d = (L.Dense(4, name=name)(inputs) for name in "abcd")
    highest = L.Maximum(name="max")([a, b])
    outputs = [L.Dense(2, name="reader")(highest), L.Minimum(name="min")([c, d])]
    got = plan(outputs, inputs, ["a", "b", "c", "d", "reader"])
    want = expected({"reader": (None, None)}, {"min": (None, None)})
    assert got == want._replace(compared_on_reader={"max", "min"})


def test_a_bilinear_upsampling_into_a_reader_rounds_on_its_grid_and_others_are_not():
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inputs)
    joined = L.UpSampling2D(interpolation="bilinear", name="up1")(x)  # into a concatenation
    x = L.Concatenate(name="join")([joined, L.UpSampling2D(name="nearest")(x)])
    x = L.Conv2D(4, 3, name="c2")(x)
    x = L.UpSampling2D(interpolation="bilinear", name="up2")(x)  # read by two
    outputs = [L.Conv2D(2, 1, name=name)(x) for name in ("c3", "c4")]
    got = plan(outputs, inputs, ["c1", "c2", "c3", "c4"])
    assert got.resized_on_reader == {"up1"}
    # c1 writes on c2's grid; c2 on a tracked range, which "up2" keeps.
    assert got.wrappers == {"c2": (None, None), "c3": (None, None), "c4": (None, None)}
    # Unless c3 and c4 share one quantizer after "up2": c2 writes on its grid.
    shared = plan_output_quantizers(keras.Model(inputs, outputs), {"c1", "c2", "c3", "c4"}, {"up2"})
    assert shared.resized_on_reader == {"up1", "up2"}
    assert shared.wrappers == {"c3": (None, None), "c4": (None, None)}


def test_a_global_average_pooling_no_quantizer_reads_is_rounded_on_its_own_range():
    # The file's MEAN writes on a range of its own: "g1" is read by an Add,
    # "g2" returned too. "g3" is read by a Dense, whose quantizer gives the
    # MEAN its scale; the ReLU after "g4" is a RELU op of its own. "g5" is
    # read by a Dense left float, and computed in float before it.
    inputs = keras.Input((8, 8, 1))
    c = L.Conv2D(4, 3, name="c")(inputs)
    g1, g2, g3, g4, g5 = (L.GlobalAveragePooling2D(name=f"g{i}")(c) for i in range(1, 6))
    outputs = [
        L.Add(name="add")([g1, g2]),
        g2,
        L.Dense(2, name="d")(g3),
        L.ReLU(name="r")(g4),
        L.Dense(2, name="float")(g5),
    ]
    got = plan(outputs, inputs, ["c", "d"])
    assert got.tensors == {
        "g1": (None, None),
        "g2": (None, None),
        "add": (None, None),
        "g4": (None, None),
        "r": (0.0, None),
    }


def test_a_layer_applied_twice_rounds_the_call_no_quantizer_reads():
    inputs = keras.Input((8, 8, 1))
    step = L.Conv2D(4, 3, padding="same", activation="relu", name="step")
    x = step(step(L.Conv2D(4, 3, padding="same", name="c")(inputs)))
    outputs = L.Dense(3, name="logits")(L.GlobalAveragePooling2D(name="gap")(x))
    got = plan(outputs, inputs, ["c", "step", "logits"])
    assert got.wrappers == {"step": (0.0, None), "logits": (None, None)}
    assert got.unrounded_calls == {"step": {0}}


def test_a_layer_applied_twice_whose_calls_quantizers_read_keeps_no_range():
    inputs = keras.Input((8,))
    step = L.Dense(8, name="step")
    outputs = L.Dense(3, name="logits")(step(step(inputs)))
    got = plan(outputs, inputs, ["step", "logits"])
    assert got.wrappers == {"logits": (None, None)}
    assert got.unrounded_calls == {}


def test_a_call_of_a_layer_applied_twice_fuses_the_relu_layer_reading_it():
    inputs = keras.Input((8, 8, 1))
    step = L.Conv2D(4, 3, padding="same", name="step")
    x = L.Conv2D(4, 3, padding="same", name="c")(inputs)
    x = L.ReLU(name="r2")(step(L.ReLU(name="r1")(step(x))))
    outputs = L.Dense(3, name="logits")(L.GlobalAveragePooling2D(name="gap")(x))
    got = plan(outputs, inputs, ["c", "step", "logits"])
    # r1 writes on step's input grid; r2, read by the pooling, on a range of its own.
    assert got.wrappers == {"logits": (None, None)}
    assert got.tensors == {"r2": (0.0, None)}
    assert got.unrounded_calls == {"step": {0, 1}}
