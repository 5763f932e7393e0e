# Model build targets (Python side). Included by the top-level Makefile:
#   include models/model.mk
# Run from the repository root. Variables may be overridden on the command line.

PYTHON      ?= python3
CKPT        ?=
MODEL_NAME  ?= lgmsnet-phantom-us
MODEL_OUT   ?= models/lgmsnet.f32.onnx
MODEL_DATA  ?= unknown

.PHONY: model model-random model-test

# Export an authors'-format checkpoint: make model CKPT=path/to/best.pth
model:
	@test -n "$(CKPT)" || { echo "usage: make model CKPT=path/to/checkpoint.pth [MODEL_NAME=...] [MODEL_OUT=...]"; exit 2; }
	$(PYTHON) -m models.export --ckpt "$(CKPT)" --out "$(MODEL_OUT)" --name "$(MODEL_NAME)" --training-data "$(MODEL_DATA)"

# Seeded random weights, for the demo and tests before a trained model exists.
model-random:
	$(PYTHON) -m models.export --random-seed 0 --out models/lgmsnet-random.f32.onnx --name lgmsnet-random
	$(PYTHON) -m models.parity --model models/lgmsnet-random.f32.onnx --random-seed 0

model-test:
	$(PYTHON) -m pytest -q tests/python
