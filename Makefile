# The two commands a newcomer needs: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VOLSLICE := $(VENV)/bin/volslice
STAMP := $(VENV)/.installed
COMPETITION ?= rsna2023
WORK ?= $(if $(filter rsna2019,$(COMPETITION)),work/demo_rsna2019,work/demo)
DATA ?=
CONFIG ?= configs/demo.yaml
ORGAN_CONFIG ?= configs/organs.yaml
SUBMISSIONS ?= submissions
DEMO_DATA := $(if $(DATA),$(DATA),$(WORK)/data)
# how fine-tuning starts: from the demo's own 2D-VoCo backbone (e.g. FINETUNE=model.init=imagenet instead)
FINETUNE ?= model.init=file model.weights=$(WORK)/runs/pretrain/backbone.safetensors
# how the organ-crop run starts: configs/organs.yaml's ImageNet weights unless overridden (e.g. model.init=scratch)
ORGAN_START ?=
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-slow test-gpu bench-preprocess kaggle-bundle clean-work

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

ifeq ($(COMPETITION),rsna2019)
# RSNA 2019 ICH: synthetic head CT, the cache of three windows, both descriptor stages on two folds,
# the notebook on the raw test folder, then what the model says about real head CT
demo: setup
ifeq ($(DATA),)
	$(VOLSLICE) synthetic --competition rsna2019 --out $(WORK)/data --config configs/rsna2019.yaml
endif
	$(VOLSLICE) cache --data $(DEMO_DATA) --out $(WORK)/cache --config configs/rsna2019.yaml
	$(VOLSLICE) descriptors --data $(DEMO_DATA) --cache $(WORK)/cache --config configs/rsna2019.yaml --resume \
		--report $(WORK)/report.json --submission $(SUBMISSIONS)/rsna2019_demo.csv \
		descriptors.stage1.out_dir=$(WORK)/runs/descriptors
	$(VENV)/bin/papermill --log-output --no-progress-bar notebooks/inference.ipynb $(WORK)/inference.ipynb \
		-p DATA_ROOT $(DEMO_DATA) -y "MODEL_DIRS: ['$(WORK)/runs/descriptors']" \
		-p OUTPUT $(SUBMISSIONS)/rsna2019_notebook.csv -p REPORT $(WORK)/report.json -p DEVICE auto -p PROGRESS False
	$(VOLSLICE) real-heads --out $(WORK)/real_heads --models $(WORK)/runs/descriptors --report $(WORK)/report.json
	@echo "report: $(WORK)/report.json"; cat $(WORK)/report.json
else
demo: setup
ifeq ($(DATA),)
	$(PY) preprocess/00_make_synthetic.py --out $(WORK)/data --config $(CONFIG)
endif
	$(PY) preprocess/01_dicom_to_cache.py --data $(DEMO_DATA) --out $(WORK)/cache --config $(CONFIG)
	$(PY) preprocess/02_make_folds.py --data $(DEMO_DATA) --out $(WORK)/folds.csv --config $(CONFIG)
	$(VOLSLICE) baseline --data $(DEMO_DATA) --submission $(SUBMISSIONS)/prior_baseline.csv --report $(WORK)/report.json
	$(VOLSLICE) pretrain --cache $(WORK)/cache --config $(CONFIG) --resume pretrain.train.out_dir=$(WORK)/runs/pretrain \
		$$(test -d $(DEMO_DATA)/extra_unlabeled && echo --extra $(DEMO_DATA)/extra_unlabeled)
	$(VOLSLICE) pretrain --method volume-fusion --cache $(WORK)/cache --config $(CONFIG) --resume \
		segmentation.fusion.train.out_dir=$(WORK)/runs/volume_fusion
	$(VOLSLICE) segment --cache $(WORK)/cache --folds $(WORK)/folds.csv --fold 0 --config $(CONFIG) --resume \
		--report $(WORK)/report.json segmentation.train.out_dir=$(WORK)/runs/segmentation \
		segmentation.weights=$(WORK)/runs/volume_fusion/volume_fusion.safetensors
	$(PY) preprocess/03_predict_organs.py --cache $(WORK)/cache --segmenter $(WORK)/runs/segmentation
	$(VOLSLICE) train --data $(DEMO_DATA) --cache $(WORK)/cache --folds $(WORK)/folds.csv --config $(CONFIG) \
		--report $(WORK)/report.json --resume train.out_dir=$(WORK)/runs/classifier $(FINETUNE)
	$(VOLSLICE) train --data $(DEMO_DATA) --cache $(WORK)/cache --folds $(WORK)/folds.csv --config $(CONFIG) \
		--config $(ORGAN_CONFIG) --resume train.out_dir=$(WORK)/runs/organs $(ORGAN_START)
	$(VOLSLICE) score --data $(DEMO_DATA) --oof $(WORK)/runs/classifier $(WORK)/runs/organs --report $(WORK)/report.json \
		--fit $(WORK)/runs/ensemble.json
	$(VENV)/bin/papermill --log-output --no-progress-bar notebooks/inference.ipynb $(WORK)/inference.ipynb \
		-p DATA_ROOT $(DEMO_DATA) -p ENSEMBLE $(WORK)/runs/ensemble.json \
		-p OUTPUT $(SUBMISSIONS)/demo_ensemble.csv \
		-p REPORT $(WORK)/report.json -p DEVICE auto -p PROGRESS False
	@echo "report: $(WORK)/report.json"; cat $(WORK)/report.json
endif

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
