# cdnfs - a FUSE filesystem that mounts an S3 bucket for CDN-served assets.
#
#   make            build ./cdnfs
#   make check      install test dependencies, then the whole suite three ways:
#                   check-plain, asan, valgrind (tests/check-all); count last
#   make check-plain  unit + integration tests on the plain build
#   make asan       the suite under AddressSanitizer + UBSan (build-asan/)
#   make valgrind   the core integration tests under valgrind memcheck
#   make unit       unit tests only
#   make deps       install the Debian packages the build needs
#   make test-deps  install the Debian packages the tests need
#   make demo       collectstatic onto a local S3 server, shown step by step
#   make crash      20 kill -9 rounds (make load: 60 s over 10,000 files)
#   make install    PREFIX=/usr/local DESTDIR=
#   make clean | format | lint
#
# Knobs: SANITIZE=1 (asan+ubsan), DEVELOPER=0 (drop -Werror), BUILD=dir, CC=clang.

VERSION   := 0.1.0
PREFIX    ?= /usr/local
MOUNT_HELPER_DIR ?= /sbin
DESTDIR   ?=
CC        ?= cc
BUILD     ?= build
DEVELOPER ?= 1
SANITIZE  ?=

PKGS      := fuse3 libcurl openssl zlib libbrotlienc libbrotlidec libxml-2.0
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wformat=2 -Wwrite-strings -Wvla -Wno-format-nonliteral
ifeq ($(DEVELOPER),1)
WARN += -Werror
endif
OPT ?= -O2 -g
CFLAGS_ALL = -std=c11 -D_GNU_SOURCE -DFUSE_USE_VERSION=314 -DCDNFS_VERSION='"$(VERSION)"' \
	$(OPT) $(WARN) -Iinclude -pthread $(PKG_CFLAGS) $(CFLAGS)
LDFLAGS_ALL = -pthread $(LDFLAGS)
ifneq ($(SANITIZE),)
CFLAGS_ALL += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS_ALL += -fsanitize=address,undefined
endif

CORE_SRC := $(wildcard core/*.c)
S3_SRC   := $(wildcard s3/*.c)
CDN_SRC  := $(wildcard cdn/*.c)
FS_SRC   := $(filter-out fs/main.c,$(wildcard fs/*.c))
LIB_SRC  := $(CORE_SRC) $(S3_SRC) $(CDN_SRC) $(FS_SRC)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TOOL_SRC := $(wildcard tests/tools/*.c)
TOOL_BIN := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tests/%)
TEST_ENV := CDNFS_BIN=$(abspath $(BUILD)/cdnfs) CDNFS_TOOLS=$(abspath $(BUILD)/tests) \
	CDNFS_SIGV4_TOOL=$(abspath $(BUILD)/tests/sigv4-tool) \
	DCACHE_TEST_BIN=$(abspath $(BUILD)/tests/dcache-test)

.PHONY: all check check-plain valgrind asan unit deps test-deps demo install clean format lint bench fuzz integration crash load

all: cdnfs

ifeq ($(BUILD),build)
cdnfs: $(BUILD)/cdnfs
	cp $< $@
else
cdnfs: $(BUILD)/cdnfs
endif

$(BUILD)/libcdnfs.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	@echo "  AR      $@"
	@rm -f $@ && ar rcs $@ $^

$(BUILD)/cdnfs: $(BUILD)/fs/main.o $(BUILD)/libcdnfs.a
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS)

$(BUILD)/%.o: %.c $(wildcard include/*.h) $(wildcard fs/*.h s3/*.h cdn/*.h core/*.h)
	@mkdir -p $(@D)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c tests/unit/tap.h $(BUILD)/libcdnfs.a
	@mkdir -p $(@D)
	@echo "  CCLD    $@"
	@$(CC) $(CFLAGS_ALL) -Itests/unit -o $@ $< $(BUILD)/libcdnfs.a $(LDFLAGS_ALL) $(PKG_LIBS)

$(BUILD)/tests/%: tests/tools/%.c $(BUILD)/libcdnfs.a
	@mkdir -p $(@D)
	@echo "  CCLD    $@"
	@$(CC) $(CFLAGS_ALL) -Itests/unit -Ifs -o $@ $< $(BUILD)/libcdnfs.a $(LDFLAGS_ALL) $(PKG_LIBS)

unit: $(UNIT_BIN)
	@tests/run-unit $(UNIT_BIN)

deps:
	tests/deps.sh build

test-deps:
	tests/deps.sh test

# The whole suite, three ways (plain, ASan + UBSan, valgrind); the last line
# is the combined count.
check: test-deps
	@tests/check-all

# Unit tests, then integration tests through a real mount against a
# throwaway Ceph RADOS Gateway.  The last line is the count.
check-plain: test-deps $(BUILD)/cdnfs $(UNIT_BIN) $(TOOL_BIN)
	@$(TEST_ENV) tests/run-all $(UNIT_BIN)

integration: test-deps $(BUILD)/cdnfs $(TOOL_BIN)
	@$(TEST_ENV) tests/run-all

# The long versions of the kill -9 rounds and of the load test (make check
# runs 3 crash rounds, and 15 s over 1,000 files); -s shows their summaries.
crash: test-deps $(BUILD)/cdnfs $(TOOL_BIN)
	@CDNFS_CRASH_ROUNDS=20 PYTEST_ADDOPTS="$(PYTEST_ADDOPTS) -s -k test_crash" \
		$(TEST_ENV) tests/run-all

load: test-deps $(BUILD)/cdnfs $(TOOL_BIN)
	@CDNFS_LOAD_SECONDS=60 CDNFS_LOAD_FILES=10000 \
		PYTEST_ADDOPTS="$(PYTEST_ADDOPTS) -s -k test_load" $(TEST_ENV) tests/run-all

# Under the sanitizers: every unit test, and the integration tests of the
# filesystem core (reads, writes, rules, credentials, the CDN queue, faults,
# hostile servers, security); the long end-to-end files (workflows, CDN
# through the mount, crash rounds, load, verify, mount(8), the fuzzers, which
# are built with ASan themselves) run in the plain `make check` only, to keep
# CI within its time; so do the tests that set up a race by timing (a late
# RELEASE, a listing older than an upload, an upload overtaken by a chmod):
# their code paths are in the ASan run through the other tests.
ASAN_PYTEST := -k 'not test_workflows and not test_cdn_mount and not test_fuzz \
	and not test_crash and not test_load and not test_verify and not test_mount_helper \
	and not test_late_release and not test_listing_sent_before \
	and not overtaken_by_a_change'
asan:
	PYTEST_ADDOPTS="$(ASAN_PYTEST)" $(MAKE) --no-print-directory BUILD=build-asan SANITIZE=1 OPT="-O1 -g" check-plain

# Under valgrind memcheck: the plain build, every cdnfs the mount fixture
# starts wrapped in valgrind (tests/conftest.py CDNFS_WRAPPER), a subset of
# the core integration tests (listing, reads, small and multipart writes,
# renames, rules and compression, credentials, the status xattr); an error
# or a definite leak fails the test.  A few minutes on 2 cores.
VALGRIND := valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
	--track-fds=no -q --num-callers=30
VALGRIND_PYTEST := -k 'test_prefix_mount or test_nested_prefixes_and_markers \
	or test_changed_behind_back or (test_round_trip and (1B or 8MiB+1) and not 100mib) \
	or test_modify_uploaded_file or test_rename_directory or test_config_rules \
	or test_compressed_object_read_and_modified_by_a_fresh_mount \
	or test_invalidation_and_status_xattrs or test_profile_credentials'
.PHONY: valgrind
valgrind: test-deps $(BUILD)/cdnfs $(TOOL_BIN)
	@CDNFS_WRAPPER="$(VALGRIND)" PYTEST_ADDOPTS="$(VALGRIND_PYTEST)" $(TEST_ENV) tests/run-all

demo: test-deps
	@$(MAKE) --no-print-directory $(BUILD)/cdnfs
	CDNFS_BIN=$(abspath $(BUILD)/cdnfs) contrib/demo.sh

bench: test-deps
	@$(MAKE) --no-print-directory $(BUILD)/cdnfs
	CDNFS_BIN=$(abspath $(BUILD)/cdnfs) bench/run

include tests/fuzz/fuzz.mk

install: cdnfs
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(PREFIX)/share/man/man5
	install -m 0755 cdnfs $(DESTDIR)$(PREFIX)/bin/cdnfs
	install -m 0644 man/cdnfs.1 $(DESTDIR)$(PREFIX)/share/man/man1/cdnfs.1
	install -m 0644 man/cdnfs.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/cdnfs.conf.5
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/lib/systemd/system
	sed 's|@BINDIR@|$(PREFIX)/bin|' contrib/mount.cdnfs > $(DESTDIR)$(PREFIX)/sbin/mount.cdnfs
	chmod 0755 $(DESTDIR)$(PREFIX)/sbin/mount.cdnfs
	ln -sf mount.cdnfs $(DESTDIR)$(PREFIX)/sbin/mount.fuse.cdnfs
	@# mount(8) runs helpers from /sbin only (also /sbin/fs.d, /sbin/fs)
	install -d $(DESTDIR)$(MOUNT_HELPER_DIR)
	ln -sf $(PREFIX)/sbin/mount.cdnfs $(DESTDIR)$(MOUNT_HELPER_DIR)/mount.fuse.cdnfs
	sed 's|/usr/local/bin/cdnfs|$(PREFIX)/bin/cdnfs|' contrib/cdnfs@.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/cdnfs@.service

clean:
	rm -rf build build-asan build-fuzz cdnfs

format:
	clang-format -i $(wildcard core/*.[ch] s3/*.[ch] cdn/*.[ch] fs/*.[ch] include/*.h tests/unit/*.[ch])

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability -Iinclude -D_GNU_SOURCE core s3 cdn fs
	if command -v mandoc >/dev/null; then mandoc -T lint -W warning man/*.[15]; fi
