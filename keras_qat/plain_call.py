"""The base of keras_qat's layers: Keras traces their `call` as written, without AutoGraph."""


class PlainCall:
    """Mixin for a Keras layer whose `call` Keras traces as written, not through AutoGraph.

    tf_keras converts the `call` of every layer defined outside it with
    AutoGraph whenever it traces one in graph mode (building a Functional
    model, a train or predict function, a SavedModel), and AutoGraph
    transpiles every function that call reaches: for keras_qat's layers,
    the quantizers and the file's arithmetic, 0.1-0.2 s per quantized
    layer and trace. Their control flow is Python's over Python values
    (a condition on a tensor fails loudly rather than converting), so the
    conversion only costs. The layers whose `call` they run directly are
    tf_keras's own classes (`layer_table` matches exact types), which Keras
    never converts; a user's layer they call through `__call__` (export's
    `RangedOutput` around a producer) still is.
    """

    def _should_use_autograph(self):
        return False
