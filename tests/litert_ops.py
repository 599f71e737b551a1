"""The ops of a .tflite as LiteRT loads them, for tests that check what the file runs."""


def op_types(path):
    """`(op name, dtype of its first input)` of each op of a .tflite."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    tensors = interpreter.get_tensor_details()
    return [
        (op["op_name"], tensors[op["inputs"][0]]["dtype"]) for op in interpreter._get_ops_details()
    ]
