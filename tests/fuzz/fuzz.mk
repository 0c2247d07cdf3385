# tests/fuzz/fuzz.mk - libFuzzer targets for the parsers (included by the Makefile).
#
#   make fuzz-build   build every target into build-fuzz/fuzz/ (clang; the
#                     library is compiled again there with ASan + UBSan and
#                     libFuzzer's coverage instrumentation)
#   make fuzz         run each target FUZZ_SECONDS (default 300) from its seed
#                     corpus; crashes are written to build-fuzz/crashes/
#   make fuzz-short   the same, 6 s each (what make check runs, through
#                     tests/integration/test_fuzz.py)
#
# Needs clang and libclang-rt-14-dev (Debian 12), see tests/deps.sh.  The
# targets live in tests/fuzz/fuzz_*.c and are never part of the normal
# build (its wildcards cover core/ s3/ cdn/ fs/ and tests/unit|tools only).

FUZZ_BUILD   := build-fuzz
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 300
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN     := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_BUILD)/fuzz/%)
FUZZ_LIB     := $(FUZZ_BUILD)/libcdnfs.a
FUZZ_FLAGS   := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer

.PHONY: fuzz fuzz-build fuzz-short fuzz-lib

# The library, through this Makefile's own rules with BUILD=build-fuzz (a
# sub-make, so the header dependencies apply as for build/).
ifneq ($(BUILD),$(FUZZ_BUILD))
fuzz-lib:
	@command -v $(FUZZ_CC) >/dev/null || { echo "fuzz: $(FUZZ_CC) not found (tests/deps.sh test installs clang)" >&2; exit 1; }
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) SANITIZE=1 OPT="-O1 -g" \
		CFLAGS="-fsanitize=fuzzer-no-link" $(FUZZ_LIB)

$(FUZZ_BUILD)/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz.h fuzz-lib
	@mkdir -p $(@D)
	@echo "  FUZZ    $@"
	@$(FUZZ_CC) -std=c11 -D_GNU_SOURCE -O1 -g $(WARN) -Iinclude -Ifs -Icdn -Itests/fuzz \
		$(PKG_CFLAGS) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_LIB) -pthread $(PKG_LIBS)
endif

fuzz-build: $(FUZZ_BIN)

fuzz: fuzz-build
	tests/fuzz/run $(FUZZ_SECONDS) $(FUZZ_BIN)

fuzz-short: fuzz-build
	tests/fuzz/run 6 $(FUZZ_BIN)
