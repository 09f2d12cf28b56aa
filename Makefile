# The two commands of a fresh machine: `make run` and `make test`.
SWIFT ?= swift
SOAK_MINUTES ?= 30

.PHONY: run test test-tsan test-asan fuzz bench bench-uring soak build release deps format clean

# Seconds each fuzz target runs in `make fuzz`.
FUZZ_SECONDS ?= 60
# Tests run at once. Unbounded, every test's server and PostgreSQL session share two cores at
# the start of a run: probes went unanswered for 0.75 s and slow reads looked like losses.
TEST_WIDTH ?= 8
TEST_FLAGS = --experimental-maximum-parallelization-width $(TEST_WIDTH)

deps:
	@scripts/install-deps

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --product postgres-websockets

# Serves the demo (client-example/) on http://localhost:3000 with sample.conf; starts a
# throwaway PostgreSQL unless PGWS_DB_URI names one.
run: release
	scripts/run-demo

# Unit and integration tests against a throwaway PostgreSQL the tests start themselves
# (or PGWS_TEST_DB_URI), then every fuzz target over its committed corpus plus 20 s of new inputs.
test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build $(TEST_FLAGS)
	SWIFT=$(SWIFT) scripts/fuzz --test 20

# The same suite built with ThreadSanitizer, in its own build folder; sanitizer runs take 4
# tests at a time, as everything runs several times slower.
SANITIZER_FLAGS = --experimental-maximum-parallelization-width 4
test-tsan: deps
	$(SWIFT) build --build-tests --sanitize=thread --scratch-path .build-tsan
	PGWS_TEST_SANITIZER=thread $(SWIFT) test --skip-build $(SANITIZER_FLAGS) --sanitize=thread --scratch-path .build-tsan

# The same suite built with AddressSanitizer (leaks included), in its own build folder;
# scripts/lsan.supp lists the leaks inside libraries that LeakSanitizer is told to ignore.
test-asan: deps
	$(SWIFT) build --build-tests --sanitize=address --scratch-path .build-asan
	LSAN_OPTIONS=suppressions=$(CURDIR)/scripts/lsan.supp:print_suppressions=0 \
	PGWS_TEST_SANITIZER=address $(SWIFT) test --skip-build $(SANITIZER_FLAGS) --sanitize=address --scratch-path .build-asan

# Every fuzz target (Fuzz/) for FUZZ_SECONDS seconds, built with libFuzzer and AddressSanitizer
# in .build-fuzz; new inputs are kept in .build-fuzz/corpus for the next run.
fuzz: deps
	SWIFT=$(SWIFT) scripts/fuzz $(FUZZ_SECONDS)

# The benchmark of issue 4: release builds, throwaway PostgreSQL, writes bench-results.json.
bench: deps
	$(SWIFT) build -c release --product postgres-websockets
	$(SWIFT) build -c release --product pgws-bench
	.build/release/pgws-bench --server .build/release/postgres-websockets

# Not in CI: SOAK_MINUTES (default 30) of mixed load against the release server (churn,
# fan-out, writers, token expiries, a PostgreSQL restart every 5 minutes); prints the
# server's RSS, descriptors and sockets every minute.
soak: deps
	$(SWIFT) build -c release --product postgres-websockets
	$(SWIFT) build -c release --product pgws-bench
	.build/release/pgws-bench soak --minutes $(SOAK_MINUTES) --server .build/release/postgres-websockets

# Issue 8's io_uring prototype: the paced fan-out floor with write(2) and with io_uring.
bench-uring:
	scripts/bench-uring

# swift-format with the settings of .swift-format.
format:
	$(SWIFT) format -i -r Sources Tests Benchmarks Package.swift

clean:
	rm -rf .build .build-tsan .build-asan .build-fuzz
