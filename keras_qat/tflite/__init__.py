"""Export to TFLite: the converter-ready copy and the repairs made to the converted file."""
