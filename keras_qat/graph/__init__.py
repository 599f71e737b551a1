"""Reading a tf_keras model's structure: which layers keras_qat quantizes and how."""
