# vkec2 — developer entry points. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
PYTEST_ARGS ?=
STAMP := .make/installed

.PHONY: install demo test lint house proto proto-check bench bench-quick chaos clean lock agent-artifact

$(STAMP): pyproject.toml
	$(PIP) install --quiet -e '.[dev,local]'
	@mkdir -p .make && touch $(STAMP)

install: $(STAMP)

demo: install
	vkec2 up

test: install
	$(PYTHON) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

lint: install proto-check
	ruff check .
	ruff format --check vkec2 tasks producer agent tests bench scripts
	mypy
	lint-imports
	$(PYTHON) scripts/house.py --check

house: install
	$(PYTHON) scripts/house.py

proto: install
	$(PYTHON) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/agent/v1/*.proto

proto-check: install
	@tmp=$$(mktemp -d) && \
	$(PYTHON) -m grpc_tools.protoc -Iproto --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp proto/agent/v1/*.proto && \
	for f in $$tmp/agent/v1/*; do cmp -s $$f agent/v1/$$(basename $$f) || { echo "agent/v1/$$(basename $$f) is out of date: run 'make proto'"; rm -rf $$tmp; exit 1; }; done; \
	rm -rf $$tmp; echo "generated code is up to date"

# Every benchmark, then docs/benchmarks.md rendered from bench/results/*.json (docs/benchmarks.md).
# bench-quick: the same with --quick (100 pods, small counts; under 5 minutes on a 2-core machine);
# its two memory benchmarks, whose figures are bytes, not seconds, run side by side (the producer's
# output is shown after the Redis one's).
MEMORY_BENCHES := bench/bench_producer_memory.py bench/bench_redis_memory.py
bench: install
	@for b in bench/bench_*.py; do echo "== $$b"; PYTHONPATH=$(CURDIR) $(PYTHON) $$b || exit 1; done
	PYTHONPATH=$(CURDIR) $(PYTHON) bench/report.py

bench-quick: install
	@log=$$(mktemp); \
	PYTHONPATH=$(CURDIR) $(PYTHON) bench/bench_producer_memory.py --quick > $$log 2>&1 & side=$$!; \
	echo "== bench/bench_redis_memory.py (bench/bench_producer_memory.py beside it)"; \
	PYTHONPATH=$(CURDIR) $(PYTHON) bench/bench_redis_memory.py --quick; rc=$$?; \
	wait $$side; side_rc=$$?; echo "== bench/bench_producer_memory.py"; cat $$log; rm -f $$log; \
	[ $$rc -eq 0 ] && [ $$side_rc -eq 0 ]
	@for b in $(filter-out $(MEMORY_BENCHES),$(wildcard bench/bench_*.py)); do \
	  echo "== $$b"; PYTHONPATH=$(CURDIR) $(PYTHON) $$b --quick || exit 1; done
	PYTHONPATH=$(CURDIR) $(PYTHON) bench/report.py

# The full chaos pass (docs/reliability.md): 200 pod lifecycles under seven faults, loopback only.
CHAOS_ARGS ?=
chaos: install
	$(PYTHON) -m tests.chaos $(CHAOS_ARGS)

# The image's lock files (docs/deployment.md): exact versions with hashes of the runtime dependencies,
# and of those plus the `local` extra (compose's moto). Needs pip-tools (pip install pip-tools).
PIP_COMPILE ?= pip-compile
LOCK_FLAGS = --generate-hashes --no-emit-index-url --no-emit-find-links --strip-extras --allow-unsafe
lock:
	CUSTOM_COMPILE_COMMAND="make lock" $(PIP_COMPILE) $(LOCK_FLAGS) $(LOCK_ARGS) -o requirements.lock pyproject.toml
	CUSTOM_COMPILE_COMMAND="make lock" $(PIP_COMPILE) $(LOCK_FLAGS) $(LOCK_ARGS) --extra local -c requirements.lock \
	  -o requirements-local.lock pyproject.toml

# The pinned agent artifacts, one per platform, into dist/agent/ (docs/agent.md "Install").
AGENT_ARTIFACT_ARGS ?=
agent-artifact:
	$(PYTHON) scripts/agent_artifact.py build $(AGENT_ARTIFACT_ARGS)

clean:
	rm -rf .make build *.egg-info .mypy_cache .ruff_cache .pytest_cache
