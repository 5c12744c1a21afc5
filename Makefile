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

.PHONY: help install lock lock-check upgrade smoke doctor test test-fast test-gpu test-faults test-cluster mutation lint demo demo-data weights bench-data bench-train bench-index bench-gpu profile \
        finetune finetune-esc50 finetune-us8k cv-esc50 cv-us8k finetune-esc50-audio-head finetune-us8k-audio-head \
        cv-esc50-audio-head cv-us8k-audio-head data-esc50 data-us8k data-clotho data-audioset bench-audioset pretrain-audio train-partial train-full

help:  ## list every target with its description
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

# ---- install: exactly the versions in uv.lock (docs/install.md) ----
# uv itself lives in its own small venv (.tools/), so a machine with only python3 can run `make install`
UV_VERSION := 0.13.9
TOOLS   := .tools
UV      := $(TOOLS)/bin/uv
# optional extras beside `test` (audioset, audioset-cloud, ray, mutation): make install EXTRAS="ray audioset-cloud"
EXTRAS  ?=
SYNC     = UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never $(UV) sync --frozen --python python3 \
  $(foreach e,test $(EXTRAS),--extra $(e))

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(SYNC)
	touch $(STAMP)

install: $(STAMP)  ## create .venv with exactly the locked versions (uv.lock; never re-resolves), project editable + test extras (EXTRAS=)

lock: | $(UV)  ## re-resolve uv.lock from pyproject.toml (after editing dependencies); commit both
	$(UV) lock

lock-check: | $(UV)  ## fail when pyproject.toml and uv.lock disagree (CI runs it first)
	@out=$$($(UV) lock --check --offline 2>&1) || { echo "$$out" | grep -E '^(error|hint)' >&2; \
	  echo "uv.lock does not match pyproject.toml: run \`make lock\` and commit uv.lock" >&2; exit 1; }
	@echo "uv.lock matches pyproject.toml"

upgrade: | $(UV)  ## bump every unpinned dependency in uv.lock to its newest release, install it and run make test-fast
	$(UV) lock --upgrade
	$(SYNC)
	touch $(STAMP)
	$(MAKE) --no-print-directory test-fast

smoke: $(STAMP)  ## the install check, first in make test: every compiled extension loads, every audio format decodes (seconds)
	@$(PY) -m audioclip.install_check

doctor: $(STAMP)  ## versions against the lock, extensions, devices and precision, ffmpeg/yt-dlp, W&B, weights, datasets
	$(AC) doctor $(if $(DATA),--data $(DATA))

test: smoke  ## run the whole test suite (tiny models, one paper-size parity check); GPU checks: make test-gpu; cluster: make test-cluster
	$(PY) -m pytest tests -q -m "not gpu and not cluster"

test-fast: smoke  ## run the tests without the paper-size checks
	$(PY) -m pytest tests -q -m "not slow and not gpu and not cluster"

test-gpu: $(STAMP)  ## the checks that need CUDA (NCCL DDP + SyncBatchNorm, 16/bf16-mixed fbsp, TF32 parity); on a GPU machine
	$(PY) -m pytest tests -q -m gpu -p no:cacheprovider

test-faults: $(STAMP)  ## fault injection: kill/resume, signals, bad data, unsafe weights, bad config (docs/reliability.md); on a real cluster: make test-cluster
	$(PY) -m pytest tests -q -m "faults and not cluster"

# ---- the real scheduler, cluster and object store (docs/cluster.md): needs root and `apt-get install slurm-wlm munge`
test-cluster: $(STAMP)  ## a one-node Slurm (tools/slurm-local, brought up and down), a Ray head + worker that dies, training on an S3 server
	$(PY) -m pytest tests -q -m cluster -p no:cacheprovider

# the functions where a wrong number is silent (docs/testing.md); `mutmut run` takes fnmatch patterns of mutant names
MUTATION_SCOPE ?= 'audioclip.models.losses.*' 'audioclip.evaluation.metrics.*' 'audioclip.evaluation.zeroshot.*' \
  'audioclip.evaluation.query.*' 'audioclip.evaluation.retrieval.*' 'audioclip.data.splits.x_split_folds__*' 'audioclip.inference.x_classify__*'
JOBS ?= 2

mutation: $(STAMP)  ## mutation score per module + surviving mutants (mutmut over the fast tests; ~30 min on 2 cores)
	@$(PY) -c "import mutmut" 2>/dev/null || $(SYNC) --extra mutation
	AUDIOCLIP_SHARED=$(abspath ../shared) $(VENV)/bin/mutmut run --max-children $(JOBS) $(MUTATION_SCOPE)
	$(PY) tools/mutation_report.py $(MUTATION_SCOPE)

lint: $(STAMP)  ## ruff check of src and tests
	$(VENV)/bin/ruff check src tests

weights: $(STAMP)  ## download the official weights into ~/.cache/audioclip ($AUDIOCLIP_CACHE) and verify checksums
	$(AC) weights download

demo: $(STAMP)  ## fine-tune the tiny AudioCLIP on synthetic ESC-50 data (CPU, minutes; README: what it prints) and print test accuracy
	$(AC) demo $(ARGS)

demo-data: $(STAMP)  ## write tiny synthetic ESC-50, UrbanSound8K (official layouts) and own-data trees/manifests into data/synthetic/
	$(AC) synthetic --esc50 data/synthetic/esc50 --clips-per-class 30
	$(AC) synthetic --us8k data/synthetic/us8k
	$(AC) synthetic --folder data/synthetic/folder --multilabel data/synthetic/multilabel \
	  --captions data/synthetic/captions

# ---- datasets: the official archives, verified and unpacked into the layouts the DataModules read (docs/data.md) ----
# DATA= the root (default data/esc50, data/us8k); ARCHIVE= an archive you already have; AUDIOCLIP_DATA_MIRROR=<base URL>
# replaces the official host; an interrupted download continues where it stopped when run again
ARCHIVE ?=
dataset_download = $(AC) data download $(1) --root $(or $(DATA),$(2)) $(if $(ARCHIVE),--archive $(ARCHIVE)) $(ARGS)

data-esc50: $(STAMP)  ## download ESC-50 (karolpiczak/ESC-50 master.zip, md5-checked) into DATA (default data/esc50); ARCHIVE= a copy you have
	$(call dataset_download,esc50,$(ESC50))

data-us8k: $(STAMP)  ## download UrbanSound8K (Zenodo 1203745, 6 GB, md5-checked, resumable) into DATA (default data/us8k); ARCHIVE= a copy you have
	$(call dataset_download,us8k,$(US8K))

# Clotho v2.1: a captions CSV and a 7z of audio per split (py7zr: make install EXTRAS=captions); SPLITS="test" only
# the evaluation split that retrieval scores; ARCHIVE="f1 f2 ..." files you already have
SPLITS ?=
data-clotho: $(STAMP)  ## download Clotho v2.1 (Zenodo 4783391, md5-checked, resumable) into DATA (default data/clotho); SPLITS="test" for the evaluation split only
	$(AC) data download clotho --root $(or $(DATA),$(CLOTHO)) $(foreach s,$(SPLITS),--split $(s)) $(foreach a,$(ARCHIVE),--archive $(a)) $(ARGS)

bench-data: $(STAMP)  ## benchmark the ESC-50 data pipeline on 2,000 synthetic clips; prints one JSON line
	@$(PY) benchmarks/bench_data.py

# ---- training phases: runs/<phase>/<run-name>/ holds config.yaml, checkpoints/ (best + last) and the W&B run ----
RUNS    ?= runs
ESC50   ?= data/esc50
US8K    ?= data/us8k
# W&B group of the run (a cv-* target gives all its folds one, <target>-<start time>, unless GROUP= names it)
GROUP   ?=
# `audioclip fit` of phase $(1): its config first (it composes conf/trainer.yaml and the groups), then the overrides
fit      = $(AC) fit --config conf/$(1).yaml --trainer.num_nodes $(NODES) --trainer.devices $(GPUS) \
  $(if $(GROUP),--trainer.logger.init_args.group $(GROUP))
# RESUME=1 continues an interrupted run from its last checkpoint; a run on an object store (RUNS=s3://...) is looked up
# by `audioclip fit` itself (`--ckpt_path last`: its last.ckpt, or a fresh start when there is none)
resume   = $(if $(filter 1,$(RESUME)),$(if $(findstring ://,$(1)),--ckpt_path last,$(if $(wildcard $(1)/checkpoints/last.ckpt),--ckpt_path $(1)/checkpoints/last.ckpt,)),)
# the run directory $(1): `audioclip fit` puts the W&B run there and names it <phase>-<run> (tasks/cli.py)
run      = --trainer.default_root_dir $(1) $(call resume,$(1)) $(ARGS)

# INIT= is the weights a run starts from, on every phase target: an official tag (full, partial, esrnxfbsp, clip-rn50),
# a checkpoint file, or a previous run folder (its best checkpoint, else its last). INIT= (empty) starts from random
# weights; without INIT each target takes its own default ($(1)). The names of the previous release still work, once
# more, with a warning.
deprecated_init = $(if $(filter undefined,$(origin $(1))),,$(warning $(1)=$($(1)) is deprecated and will be removed: use INIT=$($(1)))$($(1)))
init_or = $(if $(filter undefined,$(origin INIT)),$(or $(call deprecated_init,$(2)),$(1)),$(or $(INIT),null))
# the previous phase's checkpoint when its run exists, else the official tag $(2)
previous = $(if $(wildcard $(RUNS)/$(1)/main/checkpoints/last.ckpt),$(RUNS)/$(1)/main,$(2))
# one fine-tuning fold: $(1) the phase (conf/$(1).yaml, runs/$(1)/fold$(FOLD)), $(2) the dataset root, $(3) init_from
finetune_fold = $(call fit,$(1)) --data.init_args.root $(or $(DATA),$(2)) --data.init_args.fold $(FOLD) \
  --model.init_args.init_from $(3) $(call run,$(RUNS)/$(1)/fold$(FOLD))
# the fold numbers of dataset $(1) (the fold counts live in audioclip.constants)
folds_of = $(shell $(PY) -c 'from audioclip.constants import FOLDS; print(*range(1, FOLDS["$(1)"] + 1))')
# every fold of phase $(1) on dataset $(2) (FOLDS= for some), all in one W&B group (GROUP=, else <target>-<start
# time>); the target's next line makes the table. `+`: `make -n cv-*` shows every fold's command
fold_loop = +group=$(or $(GROUP),$@-$$(date +%Y%m%d-%H%M%S)); for k in $(or $(FOLDS),$(call folds_of,$(2))); do \
  $(MAKE) --no-print-directory $(1) FOLD=$$k GROUP=$$group || exit 1; done

finetune-esc50: $(STAMP)  ## fine-tune on ESC-50 with fold FOLD as test split (DATA=, INIT= default full, GPUS=, NODES=, ARGS=)
	$(call finetune_fold,finetune-esc50,$(ESC50),$(call init_or,full))

finetune-us8k: $(STAMP)  ## fine-tune on UrbanSound8K with fold FOLD as test split (DATA=, INIT= default full, GPUS=, NODES=, ARGS=)
	$(call finetune_fold,finetune-us8k,$(US8K),$(call init_or,full))

# own data: DATA is a class-folder tree or a .csv/.tsv manifest; FOLD only when given (else the split column or a
# seeded split); the run goes to runs/finetune/<name of DATA>[-foldK]
FOLD_GIVEN   = $(filter-out file default,$(origin FOLD))
FINETUNE_RUN = $(RUNS)/finetune/$(notdir $(basename $(patsubst %/,%,$(DATA))))$(if $(FOLD_GIVEN),-fold$(FOLD))

finetune: $(STAMP)  ## fine-tune on your own data: DATA=<class-folder tree or CSV/TSV manifest> (FOLD=, INIT= default full, GPUS=, NODES=, ARGS=)
	@test -n "$(DATA)" || { echo "make finetune: give DATA=<class-folder tree or .csv/.tsv manifest>" >&2; exit 2; }
	$(call fit,finetune-folder) --data.init_args.$(if $(filter %.csv %.tsv,$(DATA)),manifest,root) $(DATA) \
	  $(if $(FOLD_GIVEN),--data.init_args.fold $(FOLD)) --model.init_args.init_from $(call init_or,full) \
	  $(call run,$(FINETUNE_RUN))

cv-esc50: $(STAMP)  ## all 5 ESC-50 folds (FOLDS="1 3" for some), then a table of per-fold and mean ± std test accuracy (runs/finetune-esc50/cv.*)
	$(call fold_loop,finetune-esc50,esc50)
	$(AC) crossval $(RUNS)/finetune-esc50

cv-us8k: $(STAMP)  ## all 10 UrbanSound8K folds, then the per-fold and mean ± std table (runs/finetune-us8k/cv.*)
	$(call fold_loop,finetune-us8k,us8k)
	$(AC) crossval $(RUNS)/finetune-us8k

# the standalone audio head starts from the pretrain-audio phase's run when it exists, else the official tag
AUDIO_HEAD_INIT = $(call init_or,$(call previous,pretrain-audio,esrnxfbsp),INIT_AUDIO_HEAD)

finetune-esc50-audio-head: $(STAMP)  ## paper Tables 1/3 audio head: ESResNeXt-fbsp, new 50-class classifier, fold FOLD as test (DATA=, INIT=, ARGS=)
	$(call finetune_fold,finetune-esc50-audio-head,$(ESC50),$(AUDIO_HEAD_INIT))

finetune-us8k-audio-head: $(STAMP)  ## paper Tables 1/3 audio head: ESResNeXt-fbsp, new 10-class classifier, fold FOLD as test (DATA=, INIT=, ARGS=)
	$(call finetune_fold,finetune-us8k-audio-head,$(US8K),$(AUDIO_HEAD_INIT))

cv-esc50-audio-head: $(STAMP)  ## the audio head on all 5 ESC-50 folds, then per-fold and mean ± std (runs/finetune-esc50-audio-head/cv.*)
	$(call fold_loop,finetune-esc50-audio-head,esc50)
	$(AC) crossval $(RUNS)/finetune-esc50-audio-head

cv-us8k-audio-head: $(STAMP)  ## the audio head on all 10 UrbanSound8K folds, then per-fold and mean ± std (runs/finetune-us8k-audio-head/cv.*)
	$(call fold_loop,finetune-us8k-audio-head,us8k)
	$(AC) crossval $(RUNS)/finetune-us8k-audio-head

# ---- caption fine-tuning on Clotho and AudioCaps (docs/evaluation.md, "Clotho and AudioCaps"): the official
# splits, the checkpoint selected on the validation split, runs/<target>/main
CLOTHO    ?= data/clotho
AUDIOCAPS ?= data/audiocaps
.PHONY: finetune-clotho finetune-audiocaps

finetune-clotho: $(STAMP)  ## fine-tune the audio head on Clotho's captions, test on its evaluation split: t2a/a2t R@k, mAP@10 (DATA=, INIT= default full, GPUS=, NODES=, ARGS=)
	$(call fit,finetune-clotho) --data.init_args.root $(or $(DATA),$(CLOTHO)) \
	  --model.init_args.init_from $(call init_or,full) $(call run,$(RUNS)/finetune-clotho/main)

finetune-audiocaps: $(STAMP)  ## fine-tune the audio head on AudioCaps' captions (audio: audioclip captions fetch audiocaps), test on its test split (DATA=, INIT=, GPUS=, NODES=, ARGS=)
	$(call fit,finetune-audiocaps) --data.init_args.root $(or $(DATA),$(AUDIOCAPS)) \
	  --model.init_args.init_from $(call init_or,full) $(call run,$(RUNS)/finetune-audiocaps/main)

bench-train: $(STAMP)  ## paper-size fine-tuning step on CPU (fp32, bf16 + channels_last, bf16 with the filter bank built twice vs once) and the real fit loop against it; one JSON line
	@$(PY) benchmarks/bench_train.py $(ARGS)

bench-index: $(STAMP)  ## `audioclip index` over 64 5-s clips, paper-size model: clips/s in fp32 and precision auto; one JSON line
	@$(PY) benchmarks/bench_index.py $(ARGS)

profile: $(STAMP)  ## where the paper-size fine-tuning step spends its time, by stage, and its bound at this machine's matrix-product peak; one JSON line per precision
	@$(PY) benchmarks/profile_step.py $(ARGS)

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
	$(AC) testmedia data/audioset-demo --n 12

data-audioset: $(STAMP) $(if $(filter data/audioset-demo/%,$(AUDIOSET_SEGMENTS)),$(AUDIOSET_SEGMENTS))  ## AudioSet shards: ingest AUDIOSET_CLIPS (empty: download with yt-dlp) -> extract -> pack into AUDIOSET_ROOT/shards/{train,val} (AUDIOSET_VAL_FRACTION=0.01)
	$(AC) prepare audioset all --segments $(AUDIOSET_SEGMENTS) --root $(AUDIOSET_ROOT) $(if $(AUDIOSET_CLIPS),--clips $(AUDIOSET_CLIPS)) --val-fraction $(AUDIOSET_VAL_FRACTION) $(ARGS)

bench-audioset: $(STAMP)  ## AudioSet pipeline throughput: one JSON line (extract clips/s/core, bytes/clip, items/s/worker)
	@$(PY) benchmarks/bench_audioset.py

SHARDS ?= $(AUDIOSET_ROOT)/shards
AUDIOSET_DATA = --data.init_args.train_dir $(SHARDS)/train --data.init_args.val_dir $(SHARDS)/val

# one AudioSet phase: $(1) the phase (conf/$(1).yaml, runs/$(1)/main), $(2) its own settings
audioset_phase = $(call fit,$(1)) $(AUDIOSET_DATA) $(2) $(call run,$(RUNS)/$(1)/main)

pretrain-audio: $(STAMP)  ## phase 1: standalone ESResNeXt-fbsp on AudioSet audio, BCE over 527 classes (SHARDS=, INIT= default ImageNet body, GPUS=, NODES=, ARGS=)
	$(call audioset_phase,pretrain-audio,--data.init_args.frames false --model.init_args.init_from $(call init_or,null))

# each AudioSet phase starts from the previous phase's run when it exists, else the official weight tag
PARTIAL_INIT = $(call init_or,$(call previous,pretrain-audio,esrnxfbsp),INIT_PARTIAL)
FULL_INIT    = $(call init_or,$(call previous,train-partial,partial),INIT_FULL)

train-partial: $(STAMP)  ## phase 2: audio head learns from frozen CLIP teachers on AudioSet audio + frames + text (INIT= the audio head, default pretrain-audio's run or esrnxfbsp)
	$(call audioset_phase,train-partial,--model.init_args.audio_init_from $(PARTIAL_INIT))

train-full: $(STAMP)  ## phase 3: all three heads trained jointly on AudioSet audio + frames + text (INIT= default train-partial's run or partial)
	$(call audioset_phase,train-full,--model.init_args.init_from $(FULL_INIT))

.PHONY: report
report: $(STAMP)  ## gather the latest results under runs/ (RUNS=) into runs/REPORT.md + REPORT.json: paper Tables 1-4 beside comparable runs, plots, W&B
	$(AC) report --runs $(RUNS)

# ---- linear probe of frozen audio embeddings (docs/evaluation.md, "Linear probe"); the embeddings are computed once
# and kept in $(RUNS)/eval/embeddings, keyed by the weights; CHECKPOINT= the weights probed: a tag or a checkpoint file
CHECKPOINT ?= full
.PHONY: probe-esc50 probe-us8k

probe-esc50: $(STAMP)  ## linear probe on ESC-50's 5 folds: per-fold and mean ± std accuracy, C chosen on the training folds (CHECKPOINT= default full, DATA=, ARGS=)
	$(AC) evaluate probe --dataset esc50 --root $(or $(DATA),$(ESC50)) --checkpoint $(CHECKPOINT) --out $(RUNS)/eval $(ARGS)

probe-us8k: $(STAMP)  ## linear probe on UrbanSound8K's 10 folds: per-fold and mean ± std accuracy (CHECKPOINT= default full, DATA=, ARGS=)
	$(AC) evaluate probe --dataset us8k --root $(or $(DATA),$(US8K)) --checkpoint $(CHECKPOINT) --out $(RUNS)/eval $(ARGS)

# ---- the paper, reproduced: every row that can run with the data and weights on disk (docs/reproducing.md) ----
# each row is an `audioclip evaluate` of the official weights or a cv-* cross-validation (its phase target per fold,
# INIT= the weights); a row whose data or weights are missing is skipped and says how to get them; run again, it
# continues where it stopped. ROWS='cv-esc50-*' some rows; FOLDS="1 2" some folds; ARGS= every fine-tune;
# EVAL_ARGS= every evaluation; AUDIOSET_EVAL= the AudioSet evaluation shards; REPRODUCE_ARGS= more (--init-full ...)
AUDIOSET_EVAL  ?= data/audioset/eval/shards
EVAL_ARGS      ?=
REPRODUCE_ARGS ?=
ROWS           ?=
reproduce_cmd = $(AC) reproduce --runs $(RUNS) --esc50 $(ESC50) --us8k $(US8K) --audioset $(AUDIOSET_EVAL) \
  $(if $(ROWS),--rows $(foreach r,$(ROWS),'$(r)')) $(if $(FOLDS),--folds $(FOLDS)) $(if $(ARGS),--fit-args="$(ARGS)") \
  $(if $(EVAL_ARGS),--eval-args="$(EVAL_ARGS)") $(REPRODUCE_ARGS)

.PHONY: reproduce reproduce-plan
reproduce: $(STAMP)  ## every paper row that can run with what is on disk (official weights: zero-shot, querying, cv fine-tunes), then make report; resumable
	$(reproduce_cmd)

reproduce-plan: $(STAMP)  ## the plan of make reproduce: each row, its paper figure, command, what is missing, expected time on one GPU
	$(reproduce_cmd) --plan

# ---- shipping a trained model (docs/shipping.md) ----
.PHONY: bench-onnx
bench-onnx: $(STAMP)  ## audio encoder clips/s: PyTorch eager fp32, precision auto and onnxruntime in one run, with ratios and the export's parity; one JSON line (ARGS="--model audioclip-tiny")
	@$(PY) benchmarks/bench_onnx.py $(ARGS)

.PHONY: bench-long
bench-long: $(STAMP)  ## audio of any length (classify --window 5 --hop 2.5): time and peak memory on 15/30/60-min recordings, linearity; one JSON line (ARGS="--model audioclip-tiny")
	@$(PY) benchmarks/bench_long.py $(ARGS)
