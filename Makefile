# `make test` and `make demo` set up .venv on a fresh machine, then run.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo size-report bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check eelbert_export tests

test: lint
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/eelbert-export inspect
	mkdir -p build/demo
	$(BIN)/eelbert-export all -o build/demo --force $(ALLOW_REFUSAL)
	$(BIN)/eelbert-export predict build/demo/uno-eelbert-sentiment.int8.onnx \
	  "A gorgeous, witty, seductive movie." "The plot is nothing but boilerplate."

# Every format x mode of the default model, verified, audited against the budgets in
# pyproject.toml, with a bert-tiny baseline exported the same way. Core ML's palette4 misses
# the cosine floor on the dev split (README): its refusal is expected, not a failure.
ALLOW_REFUSAL := --allow-refusal coreml:palette4
size-report: $(STAMP)
	mkdir -p build/size
	$(BIN)/eelbert-export all models/uno-eelbert-sentiment.pt -o build/size --force \
	  $(ALLOW_REFUSAL)

# benchmarks/README.md's tables: export cost (all), latency and memory (bench), and the cost of
# the in-graph hash against a table (hash-cost), into build/bench. About 20 minutes on 2 cores.
BENCH := build/bench
bench: $(STAMP)
	mkdir -p $(BENCH)
	$(BIN)/eelbert-export all -o $(BENCH) --force $(ALLOW_REFUSAL)
	$(BIN)/eelbert-export bench models/uno-eelbert-sentiment.pt \
	  $(addprefix $(BENCH)/uno-eelbert-sentiment.,onnx int8.onnx tflite int8.tflite) \
	  --json $(BENCH)/latency.json | tee $(BENCH)/latency.md
	$(BIN)/eelbert-export hash-cost -o $(BENCH) --json $(BENCH)/hash-cost.json \
	  | tee $(BENCH)/hash-cost.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build

# The model zoo and the README's comparison table (about an hour on a 2-core CPU). Every row of
# the table is fine-tuned by the same recipe from scratch; UNO-EELBERT is also pretrained (masked
# LM) and fine-tuned, and that model ships as the default.
EE := $(BIN)/eelbert-export
RUNS := runs
PRETRAIN := --steps 1500 --batch 64 --lr 1e-3 --seed 0 --corpus data/corpus
FINETUNE := --batch 32 --lr 3e-4 --seed 0 --data data
STEPS_sentiment := 1000
STEPS_boolq := 600
# UNO-EELBERT variants, each changing one thing: the text front end, or the hash spec (a JSON
# file whose fields override the portable spec's).
VARIANTS := words int64 orders2 orders4 chars12
VARIANT_words := --text-mode words
VARIANT_int64 := --hash int64
SPEC_orders2 := {"orders": 2}
SPEC_orders4 := {"orders": 4}
SPEC_chars12 := {"max_chars": 12}
SPECS := $(RUNS)/specs/orders2.json $(RUNS)/specs/orders4.json $(RUNS)/specs/chars12.json
VARIANT_orders2 := --hash $(RUNS)/specs/orders2.json
VARIANT_orders4 := --hash $(RUNS)/specs/orders4.json
VARIANT_chars12 := --hash $(RUNS)/specs/chars12.json
ROWS := bert-tiny eelbert-tiny uno-eelbert $(addprefix uno-eelbert-,$(VARIANTS))
TASKS := sentiment boolq
SCRATCH := $(foreach r,$(ROWS),$(foreach t,$(TASKS),$(RUNS)/scratch/$(r).$(t).pt))
PRETRAINED := $(foreach t,$(TASKS),$(RUNS)/pretrained/uno-eelbert.$(t).pt)
.SECONDARY:

.PHONY: data zoo
data: $(STAMP)
	$(EE) data prepare --out data

$(RUNS)/uno-eelbert.mlm.pt: | $(STAMP)
	mkdir -p $(RUNS)
	$(EE) train pretrain --config uno-eelbert --out $@ $(PRETRAIN)

$(RUNS)/pretrained/uno-eelbert.%.pt: $(RUNS)/uno-eelbert.mlm.pt
	mkdir -p $(@D)
	$(EE) train finetune --init $< --task $* --out $@ --steps $(STEPS_$*) $(FINETUNE)

$(RUNS)/specs/%.json:
	mkdir -p $(@D)
	echo '$(SPEC_$*)' > $@

# The variant and the task from the stem, e.g. orders2.sentiment.
$(RUNS)/scratch/uno-eelbert-%.pt: $(SPECS) | $(STAMP)
	mkdir -p $(@D)
	$(EE) train finetune --init uno-eelbert $(VARIANT_$(basename $*)) \
	  --task $(subst .,,$(suffix $*)) --out $@ \
	  --steps $(STEPS_$(subst .,,$(suffix $*))) $(FINETUNE)

$(RUNS)/scratch/%.sentiment.pt: | $(STAMP)
	mkdir -p $(@D)
	$(EE) train finetune --init $* --task sentiment --out $@ --steps $(STEPS_sentiment) $(FINETUNE)

$(RUNS)/scratch/%.boolq.pt: | $(STAMP)
	mkdir -p $(@D)
	$(EE) train finetune --init $* --task boolq --out $@ --steps $(STEPS_boolq) $(FINETUNE)

zoo: $(PRETRAINED) $(SCRATCH)
	cp $(RUNS)/pretrained/uno-eelbert.sentiment.pt models/uno-eelbert-sentiment.pt
	cp $(RUNS)/scratch/eelbert-tiny.sentiment.pt models/eelbert-tiny-sentiment.pt
	for m in uno-eelbert eelbert-tiny; do \
	  $(EE) card models/$$m-sentiment.pt --task sentiment > models/$$m-sentiment.md; done
	$(EE) compare --runs $(RUNS) | tee $(RUNS)/comparison.md
