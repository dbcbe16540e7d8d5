# inferd build. `make` builds build/inferd; `make test` builds and runs the
# suite; `make SAN=1 test` does the same under ASan+UBSan in build-san/.
# Every module folder's .c files go into one static library; each
# tests/<module>/test_*.c becomes its own cmocka binary.
#
# CUDA: when nvcc is found (PATH or /usr/local/cuda) backend/cuda/*.cu are
# built too and INFERD_CUDA is defined; `make CUDA=0` (and SAN=1, since ASan
# and the CUDA runtime do not mix) builds the CPU-only program. A plain build
# compiles for sm_90a only, to stay fast on a 2-core machine; `make dist`
# (tools/dist.sh) builds every target in build-dist/ and packs a tarball.

MODULES := common loader tokenizer template backend backend/cpu model engine api server hub
CC      ?= cc
SAN     ?= 0
BUILD   ?= $(if $(filter 1,$(SAN)),build-san,build)

PKGS    := libmicrohttpd jansson libcurl oniguruma libutf8proc openblas libcrypto sqlite3
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

OPT     := -O2 -march=x86-64-v3 -mtune=native
CFLAGS  := -std=c11 -D_GNU_SOURCE -g $(OPT) -fopenmp -Wall -Wextra -Werror \
           -Wno-unused-parameter -I. $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDLIBS  := $(PKG_LIBS) -ledit -lcmocka -lm -lpthread -fopenmp
ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

NVCC    ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA    ?= $(if $(filter 1,$(SAN)),0,$(if $(NVCC),1,0))
# 90a = sm_90a machine code; 90 = compute_90 PTX, compiled by newer drivers
# for GPUs after Hopper.
CUDA_ARCHS ?= 90a
CU_SRC  :=
ifeq ($(CUDA),1)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CU_SRC  := $(wildcard backend/cuda/*.cu)
comma   := ,
CU_GENCODE := $(foreach a,$(CUDA_ARCHS),$(if $(filter 90,$(a)),-gencode=arch=compute_90$(comma)code=compute_90,-gencode=arch=compute_$(a)$(comma)code=sm_$(a)))
NVFLAGS := -std=c++17 -O3 -g -I. -DINFERD_CUDA --threads 0 $(CU_GENCODE) \
           -Xcompiler=-Wall,-Wextra,-Wno-unused-parameter,-fno-omit-frame-pointer \
           -Werror=all-warnings $(EXTRA_NVFLAGS)
CFLAGS  += -DINFERD_CUDA
LDLIBS  += -L$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart_static -ldl -lrt -lstdc++
endif

LIB_SRC  := $(foreach m,$(MODULES),$(wildcard $(m)/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(CU_SRC:%.cu=$(BUILD)/%.o)
CLI_SRC  := $(wildcard cli/*.c)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/*/test_*.c)
TEST_BIN := $(TEST_SRC:%.c=$(BUILD)/%)

.PHONY: all test clean tests dist
all: $(BUILD)/inferd

$(BUILD)/libinferd.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/inferd: $(CLI_OBJ) $(BUILD)/libinferd.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libinferd.a $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/%: tests/%.c $(BUILD)/libinferd.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libinferd.a $(LDLIBS)

tests: $(BUILD)/inferd $(TEST_BIN)

# GPU tools built like the tests (run on the GPU machine): make $(BUILD)/tools/gpu/gemv_probe
$(BUILD)/tools/gpu/%: tools/gpu/%.c $(BUILD)/libinferd.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libinferd.a $(LDLIBS)

test: tests
	tests/run.sh $(BUILD)

# A tarball of the program and the shared libraries it needs (see tools/dist.sh).
dist:
	tools/dist.sh

clean:
	rm -rf build build-san build-dist

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)
