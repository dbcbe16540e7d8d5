# inferd build. `make` builds build/inferd; `make test` builds and runs the
# suite; `make SAN=1 test` does the same under ASan+UBSan in build-san/.
# Every module folder's .c files go into one static library; each
# tests/<module>/test_*.c becomes its own cmocka binary.

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

LIB_SRC  := $(foreach m,$(MODULES),$(wildcard $(m)/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_SRC  := $(wildcard cli/*.c)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/*/test_*.c)
TEST_BIN := $(TEST_SRC:%.c=$(BUILD)/%)

.PHONY: all test clean tests
all: $(BUILD)/inferd

$(BUILD)/libinferd.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/inferd: $(CLI_OBJ) $(BUILD)/libinferd.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libinferd.a $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/%: tests/%.c $(BUILD)/libinferd.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libinferd.a $(LDLIBS)

tests: $(BUILD)/inferd $(TEST_BIN)

test: tests
	tests/run.sh $(BUILD)

clean:
	rm -rf build build-san

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)
