# smtpfwd — GNU make. `make`, `make run`, `make check`, `make install`.
# SAN=1 builds with AddressSanitizer + UndefinedBehaviorSanitizer.

CC ?= cc
PREFIX ?= /usr/local
DESTDIR ?=
PYTHON ?= /usr/bin/python3
VERSION := 0.1.0

PKGS := openssl inih
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null || echo -lcmocka)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lssl -lcrypto -linih)

CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow \
	-Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
	-Iinclude -DSMTPFWD_VERSION='"$(VERSION)"' $(PKG_CFLAGS) -MMD -MP
LDLIBS := $(PKG_LIBS) -lev -lpthread

ifeq ($(SAN),1)
CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=address,undefined
BUILD := build/san
else
BUILD := build/default
endif

LIB_SRCS := $(filter-out src/main.c,$(wildcard src/*.c))
LIB_OBJS := $(LIB_SRCS:src/%.c=$(BUILD)/%.o)
LIB := $(BUILD)/libsmtpfwd.a
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all run check check-asan check-unit check-integration deps deps-test \
	install clean bench bench-tls fuzz fuzz-ci FORCE

all: smtpfwd

# ./smtpfwd is a copy of the binary of the last build flavour asked for,
# so switching between SAN=1 and a plain build never leaves a stale one.
smtpfwd: $(BUILD)/smtpfwd FORCE
	@cmp -s $< $@ || { cp $< $@.tmp && mv -f $@.tmp $@; }

$(BUILD)/smtpfwd: $(BUILD)/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(LIB): $(LIB_OBJS)
	$(AR) rcs $@ $^

$(BUILD)/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Wno-missing-prototypes $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS) $(CMOCKA_LIBS)

# Installs what is missing (apt-get), only when something is missing.
deps:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

run: deps
	@$(MAKE) --no-print-directory smtpfwd
	./smtpfwd -c etc/smtpfwd.ini

# Unit tests write JUnit XML, pytest too; tests/summary.py prints the one
# summary line CI looks for and fails if anything failed.
check: deps deps-test
	@$(MAKE) --no-print-directory smtpfwd $(UNIT_BINS)
	@rm -rf build/results && mkdir -p build/results
	@status=0; \
	for t in $(UNIT_BINS); do \
		CMOCKA_MESSAGE_OUTPUT=xml CMOCKA_XML_FILE=build/results/unit-%g.xml \
			$$t >build/results/$$(basename $$t).log 2>&1 || { \
			status=1; echo "FAILED: $$t"; cat build/results/$$(basename $$t).log; }; \
	done; \
	SMTPFWD_BIN=$(CURDIR)/smtpfwd $(PYTHON) -m pytest -q -p no:cacheprovider \
		--junitxml=build/results/integration.xml tests/integration || status=1; \
	$(PYTHON) tests/summary.py build/results/*.xml || status=1; \
	exit $$status

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer
# (LeakSanitizer included): a report makes the process fail.
check-asan:
	@$(MAKE) --no-print-directory SAN=1 check

# The benchmark against HAProxy, nginx, rinetd and socat (docs/benchmarks.md);
# it installs the contestants from Debian when missing. BENCH_ARGS=--quick
# for a short smoke run.
bench: deps
	@$(MAKE) --no-print-directory smtpfwd
	$(PYTHON) bench/run $(BENCH_ARGS)

# TLS termination next to HAProxy's ssl crt: handshakes/s and throughput.
bench-tls: deps
	@$(MAKE) --no-print-directory smtpfwd
	$(PYTHON) bench/tls $(BENCH_ARGS)

# libFuzzer targets (fuzz/README.md); fuzz/run installs clang-14 and
# libclang-rt-14-dev (the -fsanitize=fuzzer runtime) only when missing.
FUZZ_SECONDS ?= 60

fuzz:
	fuzz/run $(FUZZ_SECONDS)

# CI: the committed seeds and regressions, then 20 s per target.
fuzz-ci:
	fuzz/run 20

check-unit: $(UNIT_BINS)
	@for t in $(UNIT_BINS); do $$t || exit 1; done

check-integration: smtpfwd
	SMTPFWD_BIN=$(CURDIR)/smtpfwd $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

install: smtpfwd
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/share/man/man8 \
		$(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)/etc/smtpfwd
	install -m 0755 smtpfwd $(DESTDIR)$(PREFIX)/sbin/smtpfwd
	install -m 0644 etc/smtpfwd.ini $(DESTDIR)/etc/smtpfwd/smtpfwd.ini.example
	install -m 0644 docs/smtpfwd.8 $(DESTDIR)$(PREFIX)/share/man/man8/smtpfwd.8
	install -m 0644 docs/smtpfwd.ini.5 $(DESTDIR)$(PREFIX)/share/man/man5/smtpfwd.ini.5

clean:
	rm -rf build smtpfwd

-include $(LIB_OBJS:.o=.d) $(BUILD)/main.d
