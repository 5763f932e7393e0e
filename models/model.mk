# Model build targets (Python side). Included by the top-level Makefile:
#   include models/model.mk
# Run from the repository root. Variables may be overridden on the command line.

PYTHON      ?= python3
CARGO       ?= cargo
CKPT        ?=
MODEL_NAME  ?= lgmsnet-phantom-us
MODEL_OUT   ?= models/$(MODEL_NAME).f32.onnx
MODEL_INT8  ?= models/$(MODEL_NAME).int8.onnx
MODEL_DATA  ?= unknown

# train-phantom: data from the Rust phantom generator, seeds 1 (train) and 2 (val).
PHANTOM_DIR   ?= models/runs/phantom-data
PHANTOM_KIND  ?= ultrasound
TRAIN_COUNT   ?= 400
VAL_COUNT     ?= 100
TRAIN_SEED    ?= 1
VAL_SEED      ?= 2
EPOCHS        ?= 150
TRAIN_MINUTES ?= 40
TRAIN_DEVICE  ?= auto
TRAIN_ARGS    ?=
RUN_DIR       ?= models/runs/$(MODEL_NAME)
PHANTOM_DESC   = lgms-edge phantom --kind $(PHANTOM_KIND): train $(TRAIN_COUNT) frames seed $(TRAIN_SEED), val $(VAL_COUNT) frames seed $(VAL_SEED)

# model-int8 / model-f16: the accuracy gate on the user's own frames.
CALIB      ?=
GATE       ?= 0.97
FORCE      ?=
GATE_ARGS  ?=

.PHONY: model model-random model-parity model-test phantom-data train-phantom model-int8 model-f16

# The Python side takes its phantom frames (random models' BN statistics,
# export checks, parity vectors, int8 calibration without --calib) from the
# lgms-edge binary, $(LGMS_EDGE_BIN) (the top-level Makefile builds it).

# Export an authors'-format checkpoint: make model CKPT=path/to/best.pth
model: $(if $(CKPT),$(LGMS_EDGE_BIN))
	@test -n "$(CKPT)" || { echo "usage: make model CKPT=path/to/checkpoint.pth [MODEL_NAME=...] [MODEL_OUT=...]"; exit 2; }
	$(PYTHON) -m lgms_models.export --ckpt "$(CKPT)" --out "$(MODEL_OUT)" --name "$(MODEL_NAME)" --training-data "$(MODEL_DATA)"

# Seeded random weights, for the demo and tests before a trained model exists.
# Its int8 files are fixtures of the quantiser's op checks: quantised without
# the gate, they carry no accuracy record and lgms-edge run refuses them.
model-random: $(LGMS_EDGE_BIN)
	$(PYTHON) -m lgms_models.export --random-seed 0 --out models/lgmsnet-random.f32.onnx --name lgmsnet-random
	$(PYTHON) -m lgms_models.quantize --model models/lgmsnet-random.f32.onnx --out models/lgmsnet-random.int8.onnx --frames 16
	$(PYTHON) -m lgms_models.quantize --model models/lgmsnet-random.f32.onnx --out models/lgmsnet-random.int8-perchannel.onnx --frames 16 --per-channel
	$(PYTHON) -m lgms_models.parity --model models/lgmsnet-random.f32.onnx --random-seed 0

# int8 that is only written when its masks agree with the f32 model's on
# held-out frames of CALIB (a picture folder, a .y4m file or an lgms-edge
# recording), measured through lgms-edge's own int8 path; below GATE (mean
# mask IoU) it exits non-zero and writes nothing, unless FORCE=1 (then the
# model is written recorded as failing, and lgms-edge run refuses it).
# The curve and sensitivities go to $(MODEL_INT8:.onnx=.gate.json).
model-int8: $(LGMS_EDGE_BIN)
	@test -n "$(CALIB)" || { echo "usage: make model-int8 MODEL_OUT=x.f32.onnx MODEL_INT8=x.int8.onnx CALIB=frames/ [GATE=0.97] [FORCE=1]"; exit 2; }
	$(PYTHON) -m lgms_models.gate --model "$(MODEL_OUT)" --out "$(MODEL_INT8)" --calib "$(CALIB)" --gate $(GATE) \
		--report "$(MODEL_INT8:.onnx=.gate.json)" $(if $(FORCE),--force) $(GATE_ARGS)

# The same gate for f16 (an f32 model converted at load): the record goes
# into the f32 file's metadata (lgms.gate.f16.*).
model-f16: $(LGMS_EDGE_BIN)
	@test -n "$(CALIB)" || { echo "usage: make model-f16 MODEL_OUT=x.f32.onnx CALIB=frames/ [GATE=0.97] [FORCE=1]"; exit 2; }
	$(PYTHON) -m lgms_models.gate --precision f16 --model "$(MODEL_OUT)" --calib "$(CALIB)" --gate $(GATE) \
		$(if $(FORCE),--force) $(GATE_ARGS)

# Parity vectors for an exported checkpoint: make model-parity CKPT=... MODEL_OUT=...
model-parity: $(if $(CKPT),$(LGMS_EDGE_BIN))
	@test -n "$(CKPT)" || { echo "usage: make model-parity CKPT=path/to/checkpoint.pth MODEL_OUT=model.onnx"; exit 2; }
	$(PYTHON) -m lgms_models.parity --model "$(MODEL_OUT)" --ckpt "$(CKPT)"

model-test: test-python

# The dataset is made here with the Rust binary; the folder can be carried to
# a GPU machine without cargo, where these stamps make `make` skip this step.
$(PHANTOM_DIR)/train/.done:
	$(CARGO) run --release -- phantom --out $(PHANTOM_DIR)/train --count $(TRAIN_COUNT) --seed $(TRAIN_SEED) --kind $(PHANTOM_KIND)
	touch $@
$(PHANTOM_DIR)/val/.done:
	$(CARGO) run --release -- phantom --out $(PHANTOM_DIR)/val --count $(VAL_COUNT) --seed $(VAL_SEED) --kind $(PHANTOM_KIND)
	touch $@

phantom-data: $(PHANTOM_DIR)/train/.done $(PHANTOM_DIR)/val/.done

# From scratch: data -> train (best val IoU) -> f32 export -> int8 -> parity vectors.
# On 2 CPU cores TRAIN_MINUTES caps training (the lr schedule is shortened to
# fit); on a GPU the 150 epochs take a few minutes. The export check and the
# parity vectors use the first val frame; the int8 gate calibrates on the
# first 24 val frames and measures on the next 8 through lgms-edge (gate 0.99).
train-phantom: phantom-data $(LGMS_EDGE_BIN)
	$(PYTHON) -m lgms_models.train --data $(PHANTOM_DIR)/train --val $(PHANTOM_DIR)/val --epochs $(EPOCHS) \
		--device $(TRAIN_DEVICE) --max-minutes $(TRAIN_MINUTES) --out $(RUN_DIR) $(TRAIN_ARGS)
	$(PYTHON) -m lgms_models.export --ckpt $(RUN_DIR)/best.pth --out $(MODEL_OUT) --name $(MODEL_NAME) \
		--training-data "$(PHANTOM_DESC)" --check-image "$$(ls $(PHANTOM_DIR)/val/images/*.png | head -n 1)"
	$(PYTHON) -m lgms_models.gate --model $(MODEL_OUT) --out $(MODEL_INT8) --calib $(PHANTOM_DIR)/val --frames 32 \
		--gate 0.99 --report $(MODEL_INT8:.onnx=.gate.json) --calib-desc "$(PHANTOM_DESC), val frames"
	$(PYTHON) -m lgms_models.parity --model $(MODEL_OUT) --ckpt $(RUN_DIR)/best.pth --image "$$(ls $(PHANTOM_DIR)/val/images/*.png | head -n 1)"
