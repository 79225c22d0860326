# qlora-sweep: `make sweep` runs the sweep, `make test` the tests; each sets up .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# CPU wheel here; on a GPU box: make TORCH='torch' sweep (or the CUDA build you want).
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed-$(shell echo '$(TORCH)' | tr -c 'a-zA-Z0-9.\n' _)
ARGS   ?=
export HF_HUB_DISABLE_TELEMETRY := 1

.DEFAULT_GOAL := help
.PHONY: help setup sweep follow trial report dashboard tiny test test-fast bench-overhead bench-search bench-storage gpu-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'
	@echo '  pass Hydra overrides with ARGS="...", e.g. make sweep ARGS="sweep.n_trials=20 search=qlora_modules"'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned, so the project's torch>= range never pulls a CUDA build here.
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP) ## create .venv and install the project (done by every target on first use)

sweep: $(STAMP) ## run the Optuna sweep of QLoRA trials (embedded tiny default; resumable)
	@$(BIN)/python -m sweeper $(ARGS)

follow: $(STAMP) ## follow a study whose trials run elsewhere (a SLURM job), then write its report (same ARGS as make sweep)
	@$(BIN)/python -m sweeper.follow $(ARGS)

trial: $(STAMP) ## run one fine-tuning trial: python -m trainers $(ARGS)
	@$(BIN)/python -m trainers $(ARGS)

report: $(STAMP) ## write outputs/<study>/report/ (leaderboard, plots, index.html) for the study ARGS name
	@$(BIN)/python -m sweeper.results $(ARGS)

dashboard: $(STAMP) ## serve the study in optuna-dashboard on 127.0.0.1:8080 (same ARGS as make sweep; sweep.dashboard_port=...)
	@$(BIN)/python -m sweeper.results.dashboard $(ARGS)

tiny: $(STAMP) ## build the embedded tiny model now (otherwise built on first use)
	$(BIN)/python -m trainers.tiny_model artifacts/tiny-llama

test: $(STAMP) ## run the whole test suite (real tiny trials, W&B offline, SQLite and PostgreSQL)
	$(BIN)/python -m pytest -q --durations=25 $(PYTEST_ARGS)

test-fast: $(STAMP) ## run the tests that train nothing
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench-overhead: $(STAMP) ## the sweep against the same trials run by hand with TRL (bench/README.md)
	$(BIN)/python bench/overhead.py $(BENCH_ARGS)

bench-search: $(STAMP) ## steps each search strategy spends to a good trial, against the full grid
	$(BIN)/python bench/search.py $(BENCH_ARGS)

bench-storage: $(STAMP) ## hundreds of simulated trials on one PostgreSQL study: database connections, direct vs through their node
	$(BIN)/python bench/storage_scale.py $(BENCH_ARGS)

gpu-check: $(STAMP) ## on a GPU box (make TORCH=torch gpu-check): 8B-shaped trials by hand and swept; BENCH_ARGS=--cpu for a dry run
	$(BIN)/python bench/gpu_check.py $(BENCH_ARGS)

clean: ## remove run outputs (studies, trials, W&B files); keeps .venv and artifacts/
	rm -rf outputs multirun
