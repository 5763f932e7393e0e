"""LGMSNet for lgms-edge: the PyTorch model, ONNX export, int8 quantisation,
parity vectors, training on phantom data and the peer benchmark.

The artefacts these modules read and write (ONNX files, checkpoints, parity
vectors, the state_dict spec) live in ``models/``; run the commands from the
repository root.
"""
