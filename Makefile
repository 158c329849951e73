# earnest: the two quick-start commands and their parts.
#   make run    set up, build, and run the main job on the embedded default
#   make test   set up, build (plain and ASan+UBSan), run every test
# Everything else is plain CMake underneath (build/ and build-asan/).

JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
OUT ?= out

.PHONY: all setup build run test test-fast test-asan fuzz figures clean

all: build

setup:
	@bash scripts/setup.sh

build: setup
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j$(JOBS)

run: build
	bash scripts/main_job.sh $(BUILD)/earnest $(OUT)

# The test suite: the Release build, then the same tests under AddressSanitizer
# + UndefinedBehaviorSanitizer, then every fuzz harness for a bounded time.
test: build
	cd $(BUILD) && ctest --output-on-failure -j2
	$(MAKE) test-asan
	$(MAKE) fuzz

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j2

test-asan: setup
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEARNEST_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	cd $(ASAN_BUILD) && ctest --output-on-failure -j2

fuzz: setup
	@if [ -f tests/run_fuzz.sh ]; then EARNEST_FUZZ_SECONDS=$${EARNEST_FUZZ_SECONDS:-8} bash tests/run_fuzz.sh; else echo "fuzz: no harnesses yet"; fi

figures:
	@if [ -f plots/figures.sh ]; then bash plots/figures.sh; else $(MAKE) -C plots; fi
	@if ls experiments/results/sweep_*.csv experiments/results/bench_lengths_*.csv >/dev/null 2>&1; then bash plots/sweep.sh; fi
	@if [ -f experiments/results/attention_study/summary.csv ]; then bash plots/attention_study.sh; fi

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
