# AudioCLIP-Lightning: the user's front door. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
PY      := $(VENV)/bin/python
AC      := $(VENV)/bin/audioclip
STAMP   := $(VENV)/.installed

# W&B stays offline unless the user chose a mode; `wandb sync runs/...` uploads later.
export WANDB_MODE ?= offline

FOLD    ?= 1
GPUS    ?= 1
NODES   ?= 1
ARGS    ?=
DATA    ?=
RESUME  ?= 0

.PHONY: help install test test-fast test-faults mutation lint demo demo-data weights bench-data bench-train \
        finetune-esc50 finetune-us8k cv-esc50 cv-us8k data-audioset bench-audioset pretrain-audio train-partial train-full

help:  ## list every target with its description
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project (editable) with its test extras

test: $(STAMP)  ## run the whole test suite (tiny models, one paper-size parity check)
	$(PY) -m pytest tests -q

test-fast: $(STAMP)  ## run the tests without the paper-size checks
	$(PY) -m pytest tests -q -m "not slow"

test-faults: $(STAMP)  ## fault injection: kill/resume, signals, bad data, unsafe weights, bad config (docs/reliability.md)
	$(PY) -m pytest tests -q -m faults

# the functions where a wrong number is silent (docs/testing.md); `mutmut run` takes fnmatch patterns of mutant names
MUTATION_SCOPE ?= 'audioclip.losses.*' 'audioclip.metrics.*' 'audioclip.evaluation.zeroshot.*' \
  'audioclip.evaluation.query.*' 'audioclip.data.common.x_split_folds__*' 'audioclip.inference.x_classify__*' \
  'audioclip.tasks.phases.xǁFinetuneModuleǁ_logits__*' 'audioclip.tasks.phases.xǁFinetuneModuleǁtraining_step__*' \
  'audioclip.tasks.phases.xǁFinetuneModuleǁvalidation_step__*' 'audioclip.tasks.phases.xǁFinetuneModuleǁtest_step__*' \
  'audioclip.tasks.phases.xǁAudioPretrainModuleǁ_loss__*'
JOBS ?= 2

mutation: $(STAMP)  ## mutation score per module + surviving mutants (mutmut over the fast tests; ~30 min on 2 cores)
	@$(PY) -c "import mutmut" 2>/dev/null || $(VENV)/bin/pip install --quiet -e '.[mutation]'
	AUDIOCLIP_SHARED=$(abspath ../shared) $(VENV)/bin/mutmut run --max-children $(JOBS) $(MUTATION_SCOPE)
	$(PY) tools/mutation_report.py $(MUTATION_SCOPE)

lint: $(STAMP)  ## ruff check of src and tests
	$(VENV)/bin/ruff check src tests

weights: $(STAMP)  ## download the official weights into ~/.cache/audioclip ($AUDIOCLIP_CACHE) and verify checksums
	$(AC) weights download

demo: $(STAMP)  ## fine-tune the tiny AudioCLIP on synthetic ESC-50 data (CPU, ~2 min) and print test accuracy
	$(PY) -m audioclip.demo $(ARGS)

demo-data: $(STAMP)  ## write tiny synthetic ESC-50 and UrbanSound8K datasets (official layouts) into data/synthetic/
	$(PY) -m audioclip.data.synthetic --esc50 data/synthetic/esc50 --clips-per-class 30
	$(PY) -m audioclip.data.synthetic --us8k data/synthetic/us8k

bench-data: $(STAMP)  ## benchmark the ESC-50 data pipeline on 2,000 synthetic clips; prints one JSON line
	@$(PY) benchmarks/bench_data.py

# ---- training phases: runs/<phase>/<run-name>/ holds config.yaml, checkpoints/ (best + last) and the W&B run ----
RUNS    ?= runs
ESC50   ?= data/esc50
US8K    ?= data/us8k
INIT    ?= full
FIT      = $(AC) fit --config conf/trainer.yaml --trainer.num_nodes $(NODES) --trainer.devices $(GPUS)
# RESUME=1 continues an interrupted run from its last checkpoint
resume   = $(if $(filter 1,$(RESUME)),$(if $(wildcard $(1)/checkpoints/last.ckpt),--ckpt_path $(1)/checkpoints/last.ckpt,),)

finetune-esc50: $(STAMP)  ## fine-tune on ESC-50 with fold FOLD as test split (DATA=, INIT=, GPUS=, NODES=, ARGS=)
	$(FIT) --config conf/finetune-esc50.yaml --data.init_args.root $(or $(DATA),$(ESC50)) --data.init_args.fold $(FOLD) \
	  --model.init_args.init_from $(or $(INIT),null) --trainer.default_root_dir $(RUNS)/finetune-esc50/fold$(FOLD) \
	  --trainer.logger.init_args.save_dir $(RUNS)/finetune-esc50/fold$(FOLD) --trainer.logger.init_args.name finetune-esc50-fold$(FOLD) \
	  $(call resume,$(RUNS)/finetune-esc50/fold$(FOLD)) $(ARGS)

finetune-us8k: $(STAMP)  ## fine-tune on UrbanSound8K with fold FOLD as test split (DATA=, INIT=, GPUS=, NODES=, ARGS=)
	$(FIT) --config conf/finetune-us8k.yaml --data.init_args.root $(or $(DATA),$(US8K)) --data.init_args.fold $(FOLD) \
	  --model.init_args.init_from $(or $(INIT),null) --trainer.default_root_dir $(RUNS)/finetune-us8k/fold$(FOLD) \
	  --trainer.logger.init_args.save_dir $(RUNS)/finetune-us8k/fold$(FOLD) --trainer.logger.init_args.name finetune-us8k-fold$(FOLD) \
	  $(call resume,$(RUNS)/finetune-us8k/fold$(FOLD)) $(ARGS)

cv-esc50: $(STAMP)  ## all 5 ESC-50 folds, then a table of per-fold and mean ± std test accuracy (runs/finetune-esc50/cv.*)
	for k in 1 2 3 4 5; do $(MAKE) --no-print-directory finetune-esc50 FOLD=$$k || exit 1; done
	$(PY) -m audioclip.tasks.crossval $(RUNS)/finetune-esc50

cv-us8k: $(STAMP)  ## all 10 UrbanSound8K folds, then the per-fold and mean ± std table (runs/finetune-us8k/cv.*)
	for k in 1 2 3 4 5 6 7 8 9 10; do $(MAKE) --no-print-directory finetune-us8k FOLD=$$k || exit 1; done
	$(PY) -m audioclip.tasks.crossval $(RUNS)/finetune-us8k

bench-train: $(STAMP)  ## paper-size fine-tuning step on CPU, fp32 vs bf16-mixed + channels_last; one JSON line
	@$(PY) benchmarks/bench_train.py

# ---- AudioSet: segment list -> clips (download or ingest) -> extracted media -> LitData shards ----
AUDIOSET_SEGMENTS ?= data/audioset-demo/segments.csv
AUDIOSET_CLIPS    ?= data/audioset-demo/videos
AUDIOSET_ROOT     ?= data/audioset/demo

data/audioset-demo/segments.csv: | $(STAMP)
	$(PY) -m audioclip.data.audioset.testmedia data/audioset-demo --n 12

data-audioset: $(STAMP) $(if $(filter data/audioset-demo/%,$(AUDIOSET_SEGMENTS)),$(AUDIOSET_SEGMENTS))  ## AudioSet shards: ingest AUDIOSET_CLIPS (empty: download with yt-dlp) -> extract -> pack into AUDIOSET_ROOT/shards/{train,val}
	$(AC) prepare audioset all --segments $(AUDIOSET_SEGMENTS) --root $(AUDIOSET_ROOT) $(if $(AUDIOSET_CLIPS),--clips $(AUDIOSET_CLIPS)) --val-fraction 0.25 $(ARGS)

bench-audioset: $(STAMP)  ## AudioSet pipeline throughput: one JSON line (extract clips/s/core, bytes/clip, items/s/worker)
	@$(PY) benchmarks/bench_audioset.py

SHARDS ?= $(AUDIOSET_ROOT)/shards
AUDIOSET_DATA = --data.init_args.train_dir $(SHARDS)/train --data.init_args.val_dir $(SHARDS)/val

pretrain-audio: $(STAMP)  ## phase 1: standalone ESResNeXt-fbsp on AudioSet audio, BCE over 527 classes (SHARDS=, GPUS=, NODES=, ARGS=)
	$(FIT) --config conf/pretrain-audio.yaml $(AUDIOSET_DATA) --trainer.default_root_dir runs/pretrain-audio/main \
	  --trainer.logger.init_args.save_dir runs/pretrain-audio/main --trainer.logger.init_args.name pretrain-audio \
	  $(call resume,runs/pretrain-audio/main) $(ARGS)

# the previous phase's checkpoint when it exists, else the official weight tag
PARTIAL_INIT = $(or $(INIT_PARTIAL),$(if $(wildcard runs/pretrain-audio/main/checkpoints/last.ckpt),runs/pretrain-audio/main/checkpoints/last.ckpt,esrnxfbsp))
FULL_INIT    = $(or $(INIT_FULL),$(if $(wildcard runs/train-partial/main/checkpoints/last.ckpt),runs/train-partial/main/checkpoints/last.ckpt,partial))

train-partial: $(STAMP)  ## phase 2: audio head learns from frozen CLIP teachers on AudioSet audio + frames + text
	$(FIT) --config conf/train-partial.yaml $(AUDIOSET_DATA) --model.init_args.audio_init_from $(PARTIAL_INIT) \
	  --trainer.default_root_dir runs/train-partial/main --trainer.logger.init_args.save_dir runs/train-partial/main \
	  --trainer.logger.init_args.name train-partial $(call resume,runs/train-partial/main) $(ARGS)

train-full: $(STAMP)  ## phase 3: all three heads trained jointly on AudioSet audio + frames + text
	$(FIT) --config conf/train-full.yaml $(AUDIOSET_DATA) --model.init_args.init_from $(FULL_INIT) \
	  --trainer.default_root_dir runs/train-full/main --trainer.logger.init_args.save_dir runs/train-full/main \
	  --trainer.logger.init_args.name train-full $(call resume,runs/train-full/main) $(ARGS)

.PHONY: report
report: $(STAMP)  ## gather the latest results under runs/ (RUNS=) into runs/REPORT.md: paper tables 2-4, PNG plots, W&B
	$(AC) report --runs $(RUNS)
