"""What ships a model: kd.Classifier, ONNX export, the HTTP server and the model cards."""
