# parley: a real-time messaging server.
#
#   make run     install what running needs, build quietly, start parleyd on
#                :8080 (ARGS="--port 9090" adds flags; V=1 shows commands)
#   make test    install what the tests need, build, run every test
#   make bench   run the benchmarks (bench/)
#   make fuzz    build every libFuzzer driver (clang), run each FUZZ_SECONDS
#   make install PREFIX=/usr/local DESTDIR=   binaries, library, web client,
#                man pages, example config, systemd unit
#   make SANITIZE=address,undefined test   the same tests, instrumented
#   make tsan    unit and integration tests on a ThreadSanitizer build
#
# Modules are discovered. src/<layer>/<module>.c form the server's core
# library (layers: base, codec, net, store, chat; docs/architecture.md);
# src/main.c is parleyd's entry point. lib/*.c with src/base and src/codec
# form libparley, the client library (include/parley.h). tests/unit/
# test_<module>.c are unit tests, tests/fuzz/fuzz_<name>.c fuzz drivers with
# their corpus in tests/fuzz/corpus/<name>/.

CC       ?= cc
PYTHON   ?= /usr/bin/python3
PKGS     := libuv libssl libcrypto lmdb libsodium libpq hiredis
SANITIZE ?=
FUZZ_SECONDS ?= 60

CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Wno-unused-parameter \
               -Wformat=2 -Wshadow -Wstrict-prototypes -fno-strict-aliasing -MMD -MP
ifdef WERROR
CFLAGS_BASE += -Werror
endif

# Each SANITIZE value builds into its own directory (build/san-thread,
# build/san-address-undefined, ...): objects of different instrumentations
# never mix. ThreadSanitizer excludes ASan/LSan/MSan, wants -O1, and stops on
# a report through TSAN_OPTIONS (halt_on_error), not -fno-sanitize-recover.
comma := ,
ifeq ($(SANITIZE),)
B := build
SAN_FLAGS :=
else
B := build/san-$(subst $(comma),-,$(SANITIZE))
ifneq ($(filter thread,$(subst $(comma), ,$(SANITIZE))),)
ifneq ($(filter address leak memory,$(subst $(comma), ,$(SANITIZE))),)
$(error SANITIZE=thread cannot be combined with address, leak or memory)
endif
SAN_FLAGS := -fsanitize=$(SANITIZE) -O1 -g -fno-omit-frame-pointer
else
SAN_FLAGS := -fsanitize=$(SANITIZE) -fno-sanitize-recover=all -fno-omit-frame-pointer
endif
endif

# `make tsan`: every race report fails the run (exit status 66), with the
# suppressions (third-party internals only) in tests/tsan.supp.
TSAN_OPTIONS ?= halt_on_error=1 exitcode=66 second_deadlock_stack=1 \
                suppressions=$(abspath tests/tsan.supp)

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
# libparley.so: the same sources as PIC objects in $(B)/pic, hidden by
# default; parley.h marks the API (PARLEY_API), so only parley_* is exported.
CLIENT_PKGS   := libuv libcrypto
CLIENT_LIBS    = $(shell pkg-config --libs $(CLIENT_PKGS) 2>/dev/null) -lpthread -lm
CLIENT_SONAME := libparley.so.0
CLIENT_PIC    := $(CLIENT_OBJ:$(B)/obj/%=$(B)/pic/%)
CLIENT_SO     := $(B)/libparley.so
CLIENT_PC     := $(B)/parley.pc
SERVER_OBJ    := $(filter $(B)/obj/net/% $(B)/obj/store/% $(B)/obj/chat/%,$(CORE_OBJ))
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

.PHONY: all setup setup-run run test test-layers test-unit test-lib test-fuzz test-integration test-integration-pg test-integration-cluster \
        test-browser tsan bench bench-test fuzz fuzz-build install clean

all: $(B)/parleyd $(CLI_BIN) $(CLIENT_LIB) $(CLIENT_SO) $(CLIENT_PC)

# setup: what the tests need; setup-run: only what building and running need.
setup:
	@scripts/setup.sh test

setup-run:
	@scripts/setup.sh run

# make run ARGS="--port 9090 --log-level debug": ARGS come last, so they win.
run: setup-run
	@$(MAKE) --no-print-directory $(if $(filter 1,$(V)),,-s) all
	@exec $(B)/parleyd --data-dir ./data --web-dir ./web $(ARGS)

test: setup
	@$(MAKE) --no-print-directory all $(UNIT_BIN) $(REPLAY_BIN) $(SERVER_OBJ)
	@$(MAKE) --no-print-directory test-layers test-unit test-lib bench-test test-fuzz test-integration test-integration-pg test-integration-cluster test-browser

# Imports run one way (docs/architecture.md); the checker also proves on a
# copy of the tree that it refuses a planted upward include and a cycle.
test-layers:
	@$(PYTHON) tests/layers.py
	@$(PYTHON) tests/layers.py --self-test

test-unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do $$t; done

# libparley as an application sees it: a program that includes only
# <parley.h>, built as C11 and C++ with -Werror, linked against the archive and
# the shared library; nm/readelf checks of what each one holds and exports.
test-lib: $(CLIENT_LIB) $(CLIENT_SO) $(CLIENT_PC) $(SERVER_OBJ)
	CC="$(CC)" CXX="$(CXX)" SAN_FLAGS="$(SAN_FLAGS)" CLIENT_LIBS="$(CLIENT_LIBS)" \
	    $(PYTHON) tests/lib/check_lib.py --build $(B) $(SERVER_OBJ)

test-fuzz: $(REPLAY_BIN)
	@set -e; for n in $(FUZZ_NAMES); do $(B)/tests/replay_$$n tests/fuzz/corpus/$$n; done

test-integration: $(B)/parleyd $(CLI_BIN)
	PARLEYD=$(abspath $(B)/parleyd) PARLEY_CLI=$(abspath $(B)/parley) PARLEY_WEB=$(abspath web) \
	    $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

# The crash and kill tests with the PostgreSQL backend (--store) on one node,
# on a PostgreSQL server the run starts (tests/integration/engines.py); the
# rest of the chat suite runs on PostgreSQL in the cluster run below. The
# whole suite on one PostgreSQL node: make test-integration-pg PG_TESTS=all.
PG_ALL := $(wildcard tests/integration/test_chat_*.py) tests/integration/test_durable_kill.py \
          tests/integration/test_durable_ryw.py tests/integration/test_client_resume.py
PG_TESTS := tests/integration/test_chat_crash.py tests/integration/test_durable_kill.py
override PG_TESTS := $(if $(filter all,$(PG_TESTS)),$(PG_ALL),$(PG_TESTS))
test-integration-pg: $(B)/parleyd $(CLI_BIN)
	PARLEY_TEST_STORE=postgresql PARLEYD=$(abspath $(B)/parleyd) PARLEY_CLI=$(abspath $(B)/parley) \
	    PARLEY_WEB=$(abspath web) $(PYTHON) -m pytest -q -p no:cacheprovider $(PG_TESTS)

# The same chat tests against three-node clusters: each server a test starts
# is the first of three nodes on one PostgreSQL database and a redis-server
# of their own (--bus), and its users are spread over the nodes
# (PARLEY_TEST_STORE=cluster, tests/integration/parley_client.py). The
# crash tests kill one process and restart it alone: not in this run.
CLUSTER_TESTS := $(filter-out tests/integration/test_chat_crash.py,$(wildcard tests/integration/test_chat_*.py)) \
            tests/integration/test_durable_ryw.py tests/integration/test_client_resume.py
test-integration-cluster: $(B)/parleyd $(CLI_BIN)
	PARLEY_TEST_STORE=cluster PARLEYD=$(abspath $(B)/parleyd) PARLEY_CLI=$(abspath $(B)/parley) \
	    PARLEY_WEB=$(abspath web) $(PYTHON) -m pytest -q -p no:cacheprovider $(CLUSTER_TESTS)

# Browser tests: Playwright (playwright-core) driving Debian's Chromium.
test-browser: $(B)/parleyd
	@if [ -n "$(BROWSER_TESTS)" ]; then \
	    PARLEYD=$(abspath $(B)/parleyd) PARLEY_WEB=$(abspath web) \
	    node --test --test-concurrency=1 $(BROWSER_TESTS); fi

# ThreadSanitizer: the unit and integration tests on build/san-thread (the
# browser tests are left out). Integration timeouts stretch by
# PARLEY_TEST_SLOW (TSan slows the server 5-15x).
tsan: setup
	TSAN_OPTIONS="$(TSAN_OPTIONS)" $(MAKE) --no-print-directory SANITIZE=thread test-unit
	TSAN_OPTIONS="$(TSAN_OPTIONS)" PARLEY_TEST_SLOW=$${PARLEY_TEST_SLOW:-10} \
	    $(MAKE) --no-print-directory SANITIZE=thread test-integration

bench: setup-run
	@$(MAKE) --no-print-directory all $(BENCH_BIN) $(BENCH_TEST)
	@set -e; for t in $(BENCH_TEST); do $$t; done
	@bench/run.sh $(B)

# The load generator's own unit tests (no server needed).
bench-test: $(BENCH_TEST)
	@set -e; for t in $(BENCH_TEST); do $$t; done

# libFuzzer drivers (clang): the core sources are compiled once into
# build/fuzz/obj with coverage and ASan+UBSan, each driver links against
# them. Every driver runs FUZZ_SECONDS; its log is build/fuzz/fuzz_NAME.log
# and a crash is saved as build/fuzz/crash_NAME-*.
FUZZ_CC     ?= clang
FZ          := build/fuzz
FUZZ_FLAGS  := -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer \
               -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_OBJ    := $(CORE_SRC:src/%.c=$(FZ)/obj/%.o)
FUZZ_BIN    := $(FUZZ_NAMES:%=$(FZ)/fuzz_%)

fuzz-build: setup-run
	@command -v $(FUZZ_CC) >/dev/null || { echo "make fuzz needs clang (apt-get install clang)" >&2; exit 1; }
	@$(MAKE) --no-print-directory $(if $(filter 1,$(V)),,-s) $(FUZZ_BIN)

fuzz: fuzz-build
	@set -e; for n in $(FUZZ_NAMES); do \
	    mkdir -p $(FZ)/corpus_$$n; \
	    dict=; [ -f tests/fuzz/$$n.dict ] && dict=-dict=tests/fuzz/$$n.dict; \
	    printf 'fuzz_%s: %ss ... ' $$n $(FUZZ_SECONDS); \
	    if $(FZ)/fuzz_$$n $$dict -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -artifact_prefix=$(FZ)/crash_$$n- $(FZ)/corpus_$$n tests/fuzz/corpus/$$n \
	        >$(FZ)/fuzz_$$n.log 2>&1; then \
	        sed -n 's/^stat::number_of_executed_units: */ok, /p' $(FZ)/fuzz_$$n.log | tr -d '\n'; \
	        echo " runs"; \
	    else \
	        echo "FAILED"; tail -n 60 $(FZ)/fuzz_$$n.log; exit 1; \
	    fi; \
	done

$(FZ)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -MMD -MP -Isrc -Ilib -Iinclude $(PKG_CFLAGS) -c $< -o $@

$(FZ)/libparley_core.a: $(FUZZ_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(FZ)/fuzz_%: tests/fuzz/fuzz_%.c $(FZ)/libparley_core.a
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -MMD -MP -Isrc -Ilib -Iinclude $(PKG_CFLAGS) \
	    $(SRCS_OF) -o $@ $(PKG_LIBS) -lpthread -lm

-include $(wildcard $(FZ)/obj/*/*.d $(FZ)/*.d)

# make install: PREFIX (default /usr/local) and DESTDIR as usual. The
# config file goes to SYSCONFDIR/parley only when none is there (an
# operator's edits survive upgrades); the example is always in the docs.
PREFIX      ?= /usr/local
DESTDIR     ?=
BINDIR      ?= $(PREFIX)/bin
LIBDIR      ?= $(PREFIX)/lib
INCLUDEDIR  ?= $(PREFIX)/include
DATADIR     ?= $(PREFIX)/share
MANDIR      ?= $(DATADIR)/man
DOCDIR      ?= $(DATADIR)/doc/parley
SYSCONFDIR  ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
STATEDIR    ?= /var/lib/parley
# dist/ is written for PREFIX=/usr/local; paths are rewritten on install.
DIST_SUBST  := sed -e 's|/usr/local/etc/parley|$(SYSCONFDIR)/parley|g' \
                   -e 's|/usr/local/lib/systemd/system|$(UNITDIR)|g' \
                   -e 's|/usr/local/lib/sysusers.d|$(SYSUSERSDIR)|g' \
                   -e 's|/usr/local/share/parley|$(DATADIR)/parley|g' \
                   -e 's|/usr/local/bin|$(BINDIR)|g' -e 's|/var/lib/parley|$(STATEDIR)|g'

install: setup-run
	@$(MAKE) --no-print-directory $(if $(filter 1,$(V)),,-s) all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
	    $(DESTDIR)$(DATADIR)/parley/web $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 \
	    $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/parley $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(SYSUSERSDIR)
	install -m 0755 $(B)/parleyd $(B)/parley $(DESTDIR)$(BINDIR)/
	install -m 0644 $(B)/libparley.a $(DESTDIR)$(LIBDIR)/
	install -m 0644 include/parley.h $(DESTDIR)$(INCLUDEDIR)/
	@find web -type f | sed 's|^web/||' | while read -r f; do \
	    install -D -m 0644 "web/$$f" "$(DESTDIR)$(DATADIR)/parley/web/$$f" || exit 1; done
	$(DIST_SUBST) docs/man/parleyd.8 >$(DESTDIR)$(MANDIR)/man8/parleyd.8
	$(DIST_SUBST) docs/man/parley.1 >$(DESTDIR)$(MANDIR)/man1/parley.1
	$(DIST_SUBST) dist/parleyd.conf >$(DESTDIR)$(DOCDIR)/parleyd.conf.example
	$(DIST_SUBST) dist/parleyd.service >$(DESTDIR)$(UNITDIR)/parleyd.service
	$(DIST_SUBST) dist/parley.sysusers >$(DESTDIR)$(SYSUSERSDIR)/parley.conf
	install -m 0644 README.md LICENSE $(DESTDIR)$(DOCDIR)/
	chmod 0644 $(DESTDIR)$(MANDIR)/man8/parleyd.8 $(DESTDIR)$(MANDIR)/man1/parley.1 \
	    $(DESTDIR)$(DOCDIR)/parleyd.conf.example $(DESTDIR)$(UNITDIR)/parleyd.service \
	    $(DESTDIR)$(SYSUSERSDIR)/parley.conf
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/parley/parleyd.conf ]; then \
	    echo "install: keeping $(DESTDIR)$(SYSCONFDIR)/parley/parleyd.conf (example: $(DOCDIR)/parleyd.conf.example)"; \
	else \
	    install -m 0644 $(DESTDIR)$(DOCDIR)/parleyd.conf.example $(DESTDIR)$(SYSCONFDIR)/parley/parleyd.conf; \
	fi

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

$(B)/pic/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -fvisibility=hidden -c $< -o $@

$(B)/pic/lib/%.o: lib/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -fvisibility=hidden -c $< -o $@

# --no-undefined: the library names every library it needs (sanitizer builds
# leave their runtime to the program).
$(B)/$(CLIENT_SONAME): $(CLIENT_PIC)
	$(CC) -shared -Wl,-soname,$(CLIENT_SONAME) $(if $(SANITIZE),,-Wl,--no-undefined) \
	    $(LDFLAGS) $(filter %.o,$^) -o $@ $(CLIENT_LIBS)

$(CLIENT_SO): $(B)/$(CLIENT_SONAME)
	ln -sf $(CLIENT_SONAME) $@

# pkg-config file for the build tree (PKG_CONFIG_PATH=build).
$(CLIENT_PC): Makefile
	@mkdir -p $(dir $@)
	printf '%s\n' 'libdir=$(abspath $(B))' 'includedir=$(abspath include)' '' \
	    'Name: parley' 'Description: the C client library of parley' 'Version: 0' \
	    'Requires.private: $(CLIENT_PKGS)' 'Libs: -L$${libdir} -lparley' \
	    'Libs.private: -lpthread -lm' 'Cflags: -I$${includedir}' > $@

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

-include $(wildcard $(B)/obj/*.d $(B)/obj/*/*.d $(B)/obj/bench/*/*.d $(B)/pic/*/*.d $(B)/tests/*.d $(B)/bench/*.d $(B)/*.d)
