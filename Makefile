# A thin wrapper over CMake. Every target installs what is missing first.
BUILD ?= build

.PHONY: all deps build test demo bench fuzz install clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j2

test: deps
	@bash scripts/test.sh

# The demo needs no sanitizer runtimes, valgrind or gnuplot.
demo:
	@MAE_DEPS_FULL=0 bash scripts/install-deps.sh
	@bash scripts/demo.sh

bench: deps
	@bash scripts/bench.sh

fuzz: deps
	@bash scripts/fuzz.sh

install: build
	@cmake --install $(BUILD)

clean:
	rm -rf build build-asan build-tsan build-release build-fuzz
