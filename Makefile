# `make test` and `make demo` set up .venv on a fresh machine, then run.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo clean

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
	$(BIN)/eelbert-export onnx -o build/demo --force
	$(BIN)/eelbert-export onnx -o build/demo --quantize int8 --force
	$(BIN)/eelbert-export coreml -o build/demo --quantize int8 --force
	$(BIN)/eelbert-export tflite -o build/demo --quantize int8 --force
	$(BIN)/eelbert-export predict build/demo/uno-eelbert-sentiment.int8.onnx \
	  "A gorgeous, witty, seductive movie." "The plot is nothing but boilerplate."

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
ROWS := bert-tiny eelbert-tiny uno-eelbert uno-eelbert-words uno-eelbert-int64
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

$(RUNS)/scratch/uno-eelbert-words.%.pt: | $(STAMP)
	mkdir -p $(@D)
	$(EE) train finetune --init uno-eelbert --text-mode words --task $* --out $@ \
	  --steps $(STEPS_$*) $(FINETUNE)

$(RUNS)/scratch/uno-eelbert-int64.%.pt: | $(STAMP)
	mkdir -p $(@D)
	$(EE) train finetune --init uno-eelbert --hash int64 --task $* --out $@ \
	  --steps $(STEPS_$*) $(FINETUNE)

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
