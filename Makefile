# parley: a real-time messaging server.
#
#   make run     install what is missing, build, start parleyd on :8080
#   make test    install what is missing, build, run every test
#   make bench   run the benchmarks (bench/)
#   make fuzz    run every libFuzzer driver for FUZZ_SECONDS each (clang)
#   make SANITIZE=address,undefined test   the same tests, instrumented
#
# Modules are discovered. src/<layer>/<module>.c form the server's core
# library (layers: base, codec, net, store, chat; docs/architecture.md);
# src/main.c is parleyd's entry point. lib/*.c with src/base and src/codec
# form libparley, the client library (include/parley.h). tests/unit/
# test_<module>.c are unit tests, tests/fuzz/fuzz_<name>.c fuzz drivers with
# their corpus in tests/fuzz/corpus/<name>/.

CC       ?= cc
PYTHON   ?= /usr/bin/python3
PKGS     := libuv libssl libcrypto lmdb libsodium
SANITIZE ?=
FUZZ_SECONDS ?= 60

CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Wno-unused-parameter \
               -Wformat=2 -Wshadow -Wstrict-prototypes -fno-strict-aliasing -MMD -MP
ifdef WERROR
CFLAGS_BASE += -Werror
endif

ifeq ($(SANITIZE),)
B := build
SAN_FLAGS :=
else
B := build/san
SAN_FLAGS := -fsanitize=$(SANITIZE) -fno-sanitize-recover=all -fno-omit-frame-pointer
endif

# pkg-config runs only for targets that compile (not for clean/setup).
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS  += $(CFLAGS_BASE) $(SAN_FLAGS) -Isrc -Ilib -Iinclude $(PKG_CFLAGS)
LDFLAGS += $(SAN_FLAGS)
LDLIBS  += $(PKG_LIBS) -lpthread -lm

LAYERS     := base codec net store chat
CORE_SRC   := $(foreach l,$(LAYERS),$(wildcard src/$(l)/*.c))
CORE_OBJ   := $(CORE_SRC:src/%.c=$(B)/obj/%.o)
CORE_LIB   := $(B)/libparley_core.a
CLIENT_SRC := $(wildcard lib/*.c)
CLIENT_OBJ := $(CLIENT_SRC:lib/%.c=$(B)/obj/lib/%.o) \
              $(patsubst src/%.c,$(B)/obj/%.o,$(wildcard src/base/*.c src/codec/*.c))
CLIENT_LIB := $(B)/libparley.a
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES := $(FUZZ_SRC:tests/fuzz/fuzz_%.c=%)
REPLAY_BIN := $(FUZZ_NAMES:%=$(B)/tests/replay_%)
# parley-bench: bench/parley-bench.c, bench/summary.c, the scenarios
# (bench/scenario/) and the load-generation library (bench/lib/), compiled
# with -Ibench and linked with libparley (codecs, client HTTP, backoff).
BENCH_SRC  := $(wildcard bench/*.c bench/scenario/*.c bench/lib/*.c)
BENCH_OBJ  := $(BENCH_SRC:bench/%.c=$(B)/obj/bench/%.o)
BENCH_TEST := $(patsubst bench/tests/%.c,$(B)/bench/%,$(wildcard bench/tests/test_*.c))
BENCH_BIN  := $(if $(wildcard bench/parley-bench.c),$(B)/bench/parley-bench) \
              $(if $(wildcard bench/floor/floor.c),$(B)/bench/floor)
CLI_SRC    := $(wildcard cli/*.c)
CLI_BIN    := $(if $(CLI_SRC),$(B)/parley)
BROWSER_TESTS := $(wildcard tests/browser/*.test.mjs)

.PHONY: all setup run test test-unit test-fuzz test-integration test-browser bench bench-test fuzz clean

all: $(B)/parleyd $(CLI_BIN) $(CLIENT_LIB)

setup:
	@scripts/setup.sh

run: setup
	@$(MAKE) --no-print-directory all
	./$(B)/parleyd --data-dir ./data --web-dir ./web

test: setup
	@$(MAKE) --no-print-directory all $(UNIT_BIN) $(REPLAY_BIN)
	@$(MAKE) --no-print-directory test-unit test-fuzz test-integration test-browser

test-unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do $$t; done

test-fuzz: $(REPLAY_BIN)
	@set -e; for n in $(FUZZ_NAMES); do $(B)/tests/replay_$$n tests/fuzz/corpus/$$n; done

test-integration: $(B)/parleyd $(CLI_BIN)
	PARLEYD=$(abspath $(B)/parleyd) PARLEY_CLI=$(abspath $(B)/parley) PARLEY_WEB=$(abspath web) \
	    $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

# Browser tests: Playwright (playwright-core) driving Debian's Chromium.
test-browser: $(B)/parleyd
	@if [ -n "$(BROWSER_TESTS)" ]; then \
	    PARLEYD=$(abspath $(B)/parleyd) PARLEY_WEB=$(abspath web) \
	    node --test --test-concurrency=1 $(BROWSER_TESTS); fi

bench: setup
	@$(MAKE) --no-print-directory all $(BENCH_BIN) $(BENCH_TEST)
	@set -e; for t in $(BENCH_TEST); do $$t; done
	@bench/run.sh $(B)

# The load generator's own unit tests (no server needed).
bench-test: $(BENCH_TEST)
	@set -e; for t in $(BENCH_TEST); do $$t; done

fuzz:
	@command -v clang >/dev/null || { echo "make fuzz needs clang"; exit 1; }
	@set -e; mkdir -p build/fuzz; for n in $(FUZZ_NAMES); do \
	    clang -std=c11 -D_GNU_SOURCE -g -O1 -Isrc $(PKG_CFLAGS) \
	        -fsanitize=fuzzer,address,undefined \
	        -Ilib -Iinclude tests/fuzz/fuzz_$$n.c $(CORE_SRC) -o build/fuzz/fuzz_$$n $(PKG_LIBS) -lpthread -lm; \
	    mkdir -p build/fuzz/corpus_$$n; \
	    dict=; [ -f tests/fuzz/$$n.dict ] && dict=-dict=tests/fuzz/$$n.dict; \
	    echo "fuzz_$$n: $(FUZZ_SECONDS)s"; \
	    build/fuzz/fuzz_$$n $$dict -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -artifact_prefix=build/fuzz/crash_$$n- build/fuzz/corpus_$$n tests/fuzz/corpus/$$n; \
	done

clean:
	rm -rf build

$(B)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/obj/lib/%.o: lib/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(CORE_LIB): $(CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(CLIENT_LIB): $(CLIENT_OBJ)
	@rm -f $@
	ar rcs $@ $^

# Link rules name only sources and archives: the -MMD dependency files add
# headers to the prerequisites, and those must not reach the compiler.
SRCS_OF = $(filter %.c %.o %.a,$^)

$(B)/parleyd: $(B)/obj/main.o $(CORE_LIB)
	$(CC) $(LDFLAGS) $(SRCS_OF) -o $@ $(LDLIBS)

$(B)/tests/test_%: tests/unit/test_%.c $(CORE_LIB) $(CLIENT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit $(LDFLAGS) $(SRCS_OF) -o $@ $(LDLIBS)

$(B)/tests/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $(SRCS_OF) -o $@ $(LDLIBS)

$(B)/parley: $(CLI_SRC) $(CLIENT_LIB)
	$(CC) $(CFLAGS) $(shell pkg-config --cflags libedit 2>/dev/null) $(LDFLAGS) $(SRCS_OF) -o $@ \
	    $(LDLIBS) $(shell pkg-config --libs libedit 2>/dev/null)

$(B)/bench/floor: bench/floor/floor.c $(CLIENT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $(SRCS_OF) -o $@ $(LDLIBS)

$(B)/obj/bench/%.o: bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Ibench -c $< -o $@

# (objects only: a build/bench/parley-bench.d left by the older one-step
# rule still names bench/parley-bench.c as a prerequisite)
$(B)/bench/parley-bench: $(BENCH_OBJ) $(CLIENT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(filter %.o %.a,$^) -o $@ $(LDLIBS)

# bench/tests/test_<name>.c: linked with the library (not the scenarios).
$(B)/bench/test_%: bench/tests/test_%.c $(filter $(B)/obj/bench/lib/%,$(BENCH_OBJ)) $(CLIENT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Ibench -Itests/unit $(LDFLAGS) $(SRCS_OF) -o $@ $(LDLIBS)

-include $(wildcard $(B)/obj/*/*.d $(B)/obj/bench/*/*.d $(B)/tests/*.d $(B)/bench/*.d $(B)/*.d)
