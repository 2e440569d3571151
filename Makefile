# The two commands a newcomer needs: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VOLSLICE := $(VENV)/bin/volslice
STAMP := $(VENV)/.installed
COMPETITION ?= rsna2023
WORK ?= $(if $(filter rsna2019,$(COMPETITION)),work/demo_rsna2019,work/demo)
DATA ?=
CONFIG ?= $(if $(filter rsna2019,$(COMPETITION)),configs/demo_rsna2019.yaml,configs/demo.yaml)
ORGAN_CONFIG ?= configs/demo_organs.yaml
SUBMISSIONS ?= $(WORK)/submissions
DEMO_DATA := $(if $(DATA),$(DATA),$(WORK)/data)
# how fine-tuning starts: from the demo's own 2D-VoCo backbone (e.g. FINETUNE=model.init=imagenet instead)
FINETUNE ?= model.init=file model.weights=$(WORK)/runs/pretrain/backbone.safetensors
# how the organ-crop run starts: configs/demo_organs.yaml's ImageNet weights unless overridden (e.g. model.init=scratch)
ORGAN_START ?=
# key=value overrides for every step of make pipeline that takes a config, after the step's own (e.g.
# a rehearsal's OVERRIDES="train.epochs=1 segmentation.train.min_steps=0"); make demo's data step keeps its config
OVERRIDES ?=
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: setup demo pipeline test test-slow test-gpu bench-preprocess kaggle-bundle clean-work

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# make demo: a synthetic set (unless DATA names one: a synthetic set made earlier), then the
# pipeline on it with the CPU demo's config. make pipeline: the same chain on any data folder with
# any config (the real competition: CONFIG=configs/rsna2023.yaml, see README).
demo: setup
	@if [ -n "$(DATA)" ] && [ ! -f "$(DATA)/test_solution.csv" ]; then \
		echo "make demo: error: $(DATA) has no test_solution.csv, so it is not a synthetic set: make demo runs the"; \
		echo "  CPU demo's small config; on the competition's data run make pipeline DATA=$(DATA) WORK=... CONFIG=configs/$(COMPETITION).yaml"; \
		exit 2; fi
ifeq ($(DATA),)
	$(PY) preprocess/00_make_synthetic.py --out $(WORK)/data --config $(CONFIG)
endif
	$(MAKE) --no-print-directory pipeline DATA=$(DEMO_DATA)

pipeline: setup
	@if [ -z "$(DATA)" ]; then echo "make pipeline: error: give DATA=the competition's data folder"; exit 2; fi
	@if [ ! -d "$(DATA)" ]; then echo "make pipeline: error: DATA=$(DATA) is not a folder"; exit 2; fi
	$(VOLSLICE) report $(WORK)/report.json --start --data $(DATA) --config $(CONFIG)
ifeq ($(COMPETITION),rsna2019)
# RSNA 2019 ICH: the cache of three windows, both descriptor stages, the notebook on the raw test
# folder (the demo then checks what the model says about real head CT)
	$(PY) preprocess/01_dicom_to_cache.py --data $(DATA) --out $(WORK)/cache --config $(CONFIG) $(OVERRIDES)
	$(VOLSLICE) descriptors --data $(DATA) --cache $(WORK)/cache --config $(CONFIG) --resume \
		--report $(WORK)/report.json --submission $(SUBMISSIONS)/descriptors.csv \
		descriptors.stage1.out_dir=$(WORK)/runs/descriptors $(OVERRIDES)
	$(VENV)/bin/papermill --log-output --no-progress-bar notebooks/inference.ipynb $(WORK)/inference.ipynb \
		-p DATA_ROOT $(DATA) -y "MODEL_DIRS: ['$(WORK)/runs/descriptors']" \
		-p OUTPUT $(SUBMISSIONS)/notebook.csv -p REPORT $(WORK)/report.json -p DEVICE auto -p PROGRESS False
	@if [ -f "$(DATA)/test_solution.csv" ]; then \
		$(VOLSLICE) real-heads --out $(WORK)/real_heads --models $(WORK)/runs/descriptors --report $(WORK)/report.json; fi
else
	$(PY) preprocess/01_dicom_to_cache.py --data $(DATA) --out $(WORK)/cache --config $(CONFIG) $(OVERRIDES)
	$(PY) preprocess/02_make_folds.py --data $(DATA) --out $(WORK)/folds.csv --config $(CONFIG) $(OVERRIDES)
	$(VOLSLICE) baseline --data $(DATA) --config $(CONFIG) --submission $(SUBMISSIONS)/prior_baseline.csv \
		--report $(WORK)/report.json
	$(VOLSLICE) pretrain --cache $(WORK)/cache --config $(CONFIG) --resume pretrain.train.out_dir=$(WORK)/runs/pretrain \
		$$(test -d $(DATA)/extra_unlabeled && echo --extra $(DATA)/extra_unlabeled) $(OVERRIDES)
	$(VOLSLICE) pretrain --method volume-fusion --cache $(WORK)/cache --config $(CONFIG) --resume \
		segmentation.fusion.train.out_dir=$(WORK)/runs/volume_fusion $(OVERRIDES)
	$(VOLSLICE) segment --cache $(WORK)/cache --folds $(WORK)/folds.csv --fold 0 --config $(CONFIG) --resume \
		--report $(WORK)/report.json segmentation.train.out_dir=$(WORK)/runs/segmentation \
		segmentation.weights=$(WORK)/runs/volume_fusion/volume_fusion.safetensors $(OVERRIDES)
	$(PY) preprocess/03_predict_organs.py --cache $(WORK)/cache --segmenter $(WORK)/runs/segmentation
	$(VOLSLICE) train --data $(DATA) --cache $(WORK)/cache --folds $(WORK)/folds.csv --config $(CONFIG) \
		--report $(WORK)/report.json --resume train.out_dir=$(WORK)/runs/classifier $(FINETUNE) $(OVERRIDES)
	$(VOLSLICE) train --data $(DATA) --cache $(WORK)/cache --folds $(WORK)/folds.csv --config $(CONFIG) \
		--config $(ORGAN_CONFIG) --resume train.out_dir=$(WORK)/runs/organs $(ORGAN_START) $(OVERRIDES)
	$(VOLSLICE) score --data $(DATA) --oof $(WORK)/runs/classifier $(WORK)/runs/organs --report $(WORK)/report.json \
		--fit $(WORK)/runs/ensemble.json
	$(VENV)/bin/papermill --log-output --no-progress-bar notebooks/inference.ipynb $(WORK)/inference.ipynb \
		-p DATA_ROOT $(DATA) -p ENSEMBLE $(WORK)/runs/ensemble.json \
		-p OUTPUT $(SUBMISSIONS)/ensemble.csv \
		-p REPORT $(WORK)/report.json -p DEVICE auto -p PROGRESS False
endif
	@$(VOLSLICE) report $(WORK)/report.json

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

# the GPU smoke tests (skipped without CUDA): AMP, bf16, channels-last, torch.compile, pinned memory, DDP over NCCL
test-gpu: setup
	$(PY) -m pytest -q -m gpu -rs

kaggle-bundle: setup
	$(VOLSLICE) bundle --ensemble $(WORK)/runs/ensemble.json --out $(WORK)/kaggle_bundle

bench-preprocess: setup
	$(PY) benchmarks/bench_preprocess.py --work work/bench512

clean-work:
	rm -rf work
