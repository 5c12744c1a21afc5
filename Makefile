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
FOLDS   ?=
GPUS    ?= 1
NODES   ?= 1
ARGS    ?=
DATA    ?=
RESUME  ?= 0

.PHONY: help install test test-fast test-gpu test-faults mutation lint demo demo-data weights bench-data bench-train bench-index bench-gpu \
        finetune finetune-esc50 finetune-us8k cv-esc50 cv-us8k finetune-esc50-audio-head finetune-us8k-audio-head \
        cv-esc50-audio-head cv-us8k-audio-head data-audioset bench-audioset pretrain-audio train-partial train-full

help:  ## list every target with its description
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project (editable) with its test extras

test: $(STAMP)  ## run the whole test suite (tiny models, one paper-size parity check); GPU checks: make test-gpu
	$(PY) -m pytest tests -q -m "not gpu"

test-fast: $(STAMP)  ## run the tests without the paper-size checks
	$(PY) -m pytest tests -q -m "not slow and not gpu"

test-gpu: $(STAMP)  ## the checks that need CUDA (NCCL DDP + SyncBatchNorm, 16/bf16-mixed fbsp, TF32 parity); on a GPU machine
	$(PY) -m pytest tests -q -m gpu -p no:cacheprovider

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

demo-data: $(STAMP)  ## write tiny synthetic ESC-50, UrbanSound8K (official layouts) and own-data trees/manifests into data/synthetic/
	$(PY) -m audioclip.data.synthetic --esc50 data/synthetic/esc50 --clips-per-class 30
	$(PY) -m audioclip.data.synthetic --us8k data/synthetic/us8k
	$(PY) -m audioclip.data.synthetic --folder data/synthetic/folder --multilabel data/synthetic/multilabel \
	  --captions data/synthetic/captions

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

# own data: DATA is a class-folder tree or a .csv/.tsv manifest; FOLD only when given (else the split column or a
# seeded split); the run goes to runs/finetune/<name of DATA>[-foldK]
FOLD_GIVEN   = $(filter-out file default,$(origin FOLD))
FINETUNE_RUN = $(RUNS)/finetune/$(notdir $(basename $(patsubst %/,%,$(DATA))))$(if $(FOLD_GIVEN),-fold$(FOLD))

finetune: $(STAMP)  ## fine-tune on your own data: DATA=<class-folder tree or CSV/TSV manifest> (FOLD=, INIT=, GPUS=, NODES=, ARGS=)
	@test -n "$(DATA)" || { echo "make finetune: give DATA=<class-folder tree or .csv/.tsv manifest>" >&2; exit 2; }
	$(FIT) --config conf/finetune-folder.yaml --data.init_args.$(if $(filter %.csv %.tsv,$(DATA)),manifest,root) $(DATA) \
	  $(if $(FOLD_GIVEN),--data.init_args.fold $(FOLD)) --model.init_args.init_from $(or $(INIT),null) \
	  --trainer.default_root_dir $(FINETUNE_RUN) --trainer.logger.init_args.save_dir $(FINETUNE_RUN) \
	  --trainer.logger.init_args.name finetune-$(notdir $(FINETUNE_RUN)) $(call resume,$(FINETUNE_RUN)) $(ARGS)

cv-esc50: $(STAMP)  ## all 5 ESC-50 folds (FOLDS="1 3" for some), then a table of per-fold and mean ± std test accuracy (runs/finetune-esc50/cv.*)
	for k in $(or $(FOLDS),1 2 3 4 5); do $(MAKE) --no-print-directory finetune-esc50 FOLD=$$k || exit 1; done
	$(PY) -m audioclip.tasks.crossval $(RUNS)/finetune-esc50

cv-us8k: $(STAMP)  ## all 10 UrbanSound8K folds, then the per-fold and mean ± std table (runs/finetune-us8k/cv.*)
	for k in $(or $(FOLDS),1 2 3 4 5 6 7 8 9 10); do $(MAKE) --no-print-directory finetune-us8k FOLD=$$k || exit 1; done
	$(PY) -m audioclip.tasks.crossval $(RUNS)/finetune-us8k

# the standalone audio head starts from the pretrain-audio phase's checkpoint when it exists, else the official tag
AUDIO_HEAD_INIT = $(or $(INIT_AUDIO_HEAD),$(if $(wildcard $(RUNS)/pretrain-audio/main/checkpoints/last.ckpt),$(RUNS)/pretrain-audio/main/checkpoints/last.ckpt,esrnxfbsp))

finetune-esc50-audio-head: $(STAMP)  ## paper Tables 1/3 audio head: ESResNeXt-fbsp, new 50-class classifier, fold FOLD as test (DATA=, INIT_AUDIO_HEAD=, ARGS=)
	$(FIT) --config conf/finetune-esc50-audio-head.yaml --data.init_args.root $(or $(DATA),$(ESC50)) --data.init_args.fold $(FOLD) \
	  --model.init_args.init_from $(AUDIO_HEAD_INIT) --trainer.default_root_dir $(RUNS)/finetune-esc50-audio-head/fold$(FOLD) \
	  --trainer.logger.init_args.save_dir $(RUNS)/finetune-esc50-audio-head/fold$(FOLD) \
	  --trainer.logger.init_args.name finetune-esc50-audio-head-fold$(FOLD) $(call resume,$(RUNS)/finetune-esc50-audio-head/fold$(FOLD)) $(ARGS)

finetune-us8k-audio-head: $(STAMP)  ## paper Tables 1/3 audio head: ESResNeXt-fbsp, new 10-class classifier, fold FOLD as test (DATA=, INIT_AUDIO_HEAD=, ARGS=)
	$(FIT) --config conf/finetune-us8k-audio-head.yaml --data.init_args.root $(or $(DATA),$(US8K)) --data.init_args.fold $(FOLD) \
	  --model.init_args.init_from $(AUDIO_HEAD_INIT) --trainer.default_root_dir $(RUNS)/finetune-us8k-audio-head/fold$(FOLD) \
	  --trainer.logger.init_args.save_dir $(RUNS)/finetune-us8k-audio-head/fold$(FOLD) \
	  --trainer.logger.init_args.name finetune-us8k-audio-head-fold$(FOLD) $(call resume,$(RUNS)/finetune-us8k-audio-head/fold$(FOLD)) $(ARGS)

cv-esc50-audio-head: $(STAMP)  ## the audio head on all 5 ESC-50 folds, then per-fold and mean ± std (runs/finetune-esc50-audio-head/cv.*)
	for k in $(or $(FOLDS),1 2 3 4 5); do $(MAKE) --no-print-directory finetune-esc50-audio-head FOLD=$$k || exit 1; done
	$(PY) -m audioclip.tasks.crossval $(RUNS)/finetune-esc50-audio-head

cv-us8k-audio-head: $(STAMP)  ## the audio head on all 10 UrbanSound8K folds, then per-fold and mean ± std (runs/finetune-us8k-audio-head/cv.*)
	for k in $(or $(FOLDS),1 2 3 4 5 6 7 8 9 10); do $(MAKE) --no-print-directory finetune-us8k-audio-head FOLD=$$k || exit 1; done
	$(PY) -m audioclip.tasks.crossval $(RUNS)/finetune-us8k-audio-head

bench-train: $(STAMP)  ## paper-size fine-tuning step on CPU (fp32, bf16 + channels_last, bf16 before/after issue 12) and the real fit loop against it; one JSON line
	@$(PY) benchmarks/bench_train.py $(ARGS)

bench-index: $(STAMP)  ## `audioclip index` over 64 5-s clips, paper-size model: clips/s in fp32 and precision auto; one JSON line
	@$(PY) benchmarks/bench_index.py $(ARGS)

bench-gpu: $(STAMP)  ## on a GPU: paper-size fine-tuning + full-training steps at batch 64, fp32 vs bf16, and the AudioSet loader's feed rate (< 4 min); one JSON line
	@$(PY) benchmarks/bench_gpu.py $(ARGS)

# ---- AudioSet: segment list -> clips (download or ingest) -> extracted media -> LitData shards ----
AUDIOSET_SEGMENTS ?= data/audioset-demo/segments.csv
AUDIOSET_CLIPS    ?= data/audioset-demo/videos
AUDIOSET_ROOT     ?= data/audioset/demo
# share of the training segments held out for validation (checkpoint selection); the official eval list is the test
# set. 1 % by default; the 12-clip demo holds out a quarter so that its validation split is not empty.
AUDIOSET_VAL_FRACTION ?= $(if $(filter data/audioset-demo/%,$(AUDIOSET_SEGMENTS)),0.25,0.01)

data/audioset-demo/segments.csv: | $(STAMP)
	$(PY) -m audioclip.data.audioset.testmedia data/audioset-demo --n 12

data-audioset: $(STAMP) $(if $(filter data/audioset-demo/%,$(AUDIOSET_SEGMENTS)),$(AUDIOSET_SEGMENTS))  ## AudioSet shards: ingest AUDIOSET_CLIPS (empty: download with yt-dlp) -> extract -> pack into AUDIOSET_ROOT/shards/{train,val} (AUDIOSET_VAL_FRACTION=0.01)
	$(AC) prepare audioset all --segments $(AUDIOSET_SEGMENTS) --root $(AUDIOSET_ROOT) $(if $(AUDIOSET_CLIPS),--clips $(AUDIOSET_CLIPS)) --val-fraction $(AUDIOSET_VAL_FRACTION) $(ARGS)

bench-audioset: $(STAMP)  ## AudioSet pipeline throughput: one JSON line (extract clips/s/core, bytes/clip, items/s/worker)
	@$(PY) benchmarks/bench_audioset.py

SHARDS ?= $(AUDIOSET_ROOT)/shards
AUDIOSET_DATA = --data.init_args.train_dir $(SHARDS)/train --data.init_args.val_dir $(SHARDS)/val

pretrain-audio: $(STAMP)  ## phase 1: standalone ESResNeXt-fbsp on AudioSet audio, BCE over 527 classes (SHARDS=, GPUS=, NODES=, ARGS=)
	$(FIT) --config conf/pretrain-audio.yaml $(AUDIOSET_DATA) --data.init_args.frames false \
	  --trainer.default_root_dir $(RUNS)/pretrain-audio/main \
	  --trainer.logger.init_args.save_dir $(RUNS)/pretrain-audio/main --trainer.logger.init_args.name pretrain-audio \
	  $(call resume,$(RUNS)/pretrain-audio/main) $(ARGS)

# the previous phase's checkpoint when it exists, else the official weight tag
PARTIAL_INIT = $(or $(INIT_PARTIAL),$(if $(wildcard $(RUNS)/pretrain-audio/main/checkpoints/last.ckpt),$(RUNS)/pretrain-audio/main/checkpoints/last.ckpt,esrnxfbsp))
FULL_INIT    = $(or $(INIT_FULL),$(if $(wildcard $(RUNS)/train-partial/main/checkpoints/last.ckpt),$(RUNS)/train-partial/main/checkpoints/last.ckpt,partial))

train-partial: $(STAMP)  ## phase 2: audio head learns from frozen CLIP teachers on AudioSet audio + frames + text
	$(FIT) --config conf/train-partial.yaml $(AUDIOSET_DATA) --model.init_args.audio_init_from $(PARTIAL_INIT) \
	  --trainer.default_root_dir $(RUNS)/train-partial/main --trainer.logger.init_args.save_dir $(RUNS)/train-partial/main \
	  --trainer.logger.init_args.name train-partial $(call resume,$(RUNS)/train-partial/main) $(ARGS)

train-full: $(STAMP)  ## phase 3: all three heads trained jointly on AudioSet audio + frames + text
	$(FIT) --config conf/train-full.yaml $(AUDIOSET_DATA) --model.init_args.init_from $(FULL_INIT) \
	  --trainer.default_root_dir $(RUNS)/train-full/main --trainer.logger.init_args.save_dir $(RUNS)/train-full/main \
	  --trainer.logger.init_args.name train-full $(call resume,$(RUNS)/train-full/main) $(ARGS)

.PHONY: report
report: $(STAMP)  ## gather the latest results under runs/ (RUNS=) into runs/REPORT.md + REPORT.json: paper Tables 1-4 beside comparable runs, plots, W&B
	$(AC) report --runs $(RUNS)
