# `make test` and `make demo` set up .venv on a fresh machine, then run.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo size-report bench clean schema js chromium test-web

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)

# The reference JavaScript client (clients/js): onnxruntime-node, LiteRT.js, and for the web
# page's test onnxruntime-web and playwright-core, pinned by package-lock.json.
JS := clients/js
JS_STAMP := $(JS)/node_modules/.installed
$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --onnxruntime-node-install=skip --no-audit --no-fund
	touch $@

js: $(JS_STAMP)

# Debian's Chromium for the web page's test (root, or sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

lint: $(STAMP)
	$(BIN)/ruff check eelbert_export tests

test: lint js
	$(BIN)/pytest

# The web page (clients/js/web) in headless Chromium against fresh exports' test vectors;
# screenshots in build/web/.
test-web: $(STAMP) js chromium
	$(BIN)/pytest -m web tests/web

demo: $(STAMP)
	$(BIN)/eelbert-export inspect
	mkdir -p build/demo
	$(BIN)/eelbert-export all -o build/demo --force
	$(BIN)/eelbert-export predict build/demo/uno-eelbert-ngrams-sentiment.int8.onnx \
	  "A gorgeous, witty, seductive movie." "The plot is nothing but boilerplate."
	@echo "In a browser: make js && python3 -m http.server 8000, then open"
	@echo "  http://localhost:8000/clients/js/web/?model=/build/demo/uno-eelbert-ngrams-sentiment.int8.onnx"

# Every format x mode of the default model, verified, audited against the budgets in
# pyproject.toml, with a bert-tiny baseline exported the same way; then every sidecar it wrote
# validated against docs/sidecar.schema.json.
size-report: $(STAMP)
	mkdir -p build/size
	$(BIN)/eelbert-export all models/uno-eelbert-ngrams-sentiment.pt -o build/size --force
	$(BIN)/python -m tests.schema build/size

# benchmarks/README.md's tables: export cost (all), latency and memory (bench), and the cost of
# the in-graph hash against a table (hash-cost), into build/bench. About 20 minutes on 2 cores.
BENCH := build/bench
bench: $(STAMP)
	mkdir -p $(BENCH)
	$(BIN)/eelbert-export all -o $(BENCH) --force
	$(BIN)/eelbert-export bench models/uno-eelbert-ngrams-sentiment.pt \
	  $(addprefix $(BENCH)/uno-eelbert-ngrams-sentiment.,onnx int8.onnx tflite int8.tflite pte \
	  int8.pte) \
	  --json $(BENCH)/latency.json --force | tee $(BENCH)/latency.md
	$(BIN)/eelbert-export hash-cost -o $(BENCH) --json $(BENCH)/hash-cost.json --force \
	  | tee $(BENCH)/hash-cost.md

# The sidecar's JSON Schema, from contract.Sidecar (tests check the committed copy is current).
schema: $(STAMP)
	$(BIN)/python -c "from eelbert_export.contract import json_schema; print(json_schema(), end='')" \
	  > docs/sidecar.schema.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build

# The model zoo and the README's comparison table (`make -j2 zoo`: the label-only rows take
# about 90 minutes on 2 cores, each task's teacher and labels about 50 more, each distilled
# student 22; docs/training.md). Every label-only row is a named config fine-tuned from
# scratch on each task by one recipe: the same steps, dev checks every 250 steps with selection
# by dev balanced accuracy, the same lr search (LRS_<task>, chosen on dev by `compare`); the
# default model's row runs a second seed on sentiment. Each run uses one thread, so two run
# side by side. The chosen sentiment runs ship in models/ with their cards.
EE := $(BIN)/eelbert-export
ZOO := runs/zoo
ZOO_TOP := uno-eelbert-ngrams
ZOO_TASKS := sentiment sms-spam boolq
ROWS_sentiment := uno-eelbert-ngrams bert-tiny uno-eelbert uno-eelbert-wide
ROWS_sms-spam := uno-eelbert-ngrams bert-tiny uno-eelbert
ROWS_boolq := $(ROWS_sms-spam)
LRS_sentiment := 5e-4 1e-3
LRS_sms-spam := 5e-4
LRS_boolq := 5e-4
STEPS_sentiment := 6000
STEPS_boolq := 1000
STEPS_sms-spam := 1500
FINETUNE := --batch 32 --eval-every 250 --data data
# Sentiment first (the headline), then the second seeds, then the other tasks.
LABEL_RUNS := $(foreach t,$(ZOO_TASKS),$(foreach r,$(ROWS_$(t)),$(foreach l,$(LRS_$(t)),\
	$(ZOO)/$(r).$(t).lr$(l).s0.pt)) $(if $(filter sentiment,$(t)),\
	$(foreach r,$(ZOO_TOP),$(foreach l,$(LRS_$(t)),$(ZOO)/$(r).sentiment.lr$(l).s1.pt))))
# Distilled rows (docs/training.md): the pinned MiniLM-L6 teacher fine-tuned on the task by
# `train teacher`, then each student distilled from it on a transfer set of the training texts,
# 20 masked copies of each and 200,000 corpus windows (labelled once, cached in runs/). The
# default model's row searches the lr as above (two, chosen on dev) and runs a second seed.
TEACHERS := runs/teachers
DISTILLED_sentiment := distilled-uno-eelbert-ngrams distilled-bert-tiny distilled-uno-eelbert
DISTILL := --steps 6000 --batch 128 --eval-every 500 --data data
DISTILLED_TOP := distilled-uno-eelbert-ngrams
DISTILL_LRS := 1e-3 5e-4
DISTILLED_RUNS := $(foreach r,$(filter-out $(DISTILLED_TOP),$(DISTILLED_sentiment)),\
	$(ZOO)/$(r).sentiment.lr1e-3.s0.pt) \
	$(foreach l,$(DISTILL_LRS),$(foreach s,0 1,\
	$(ZOO)/$(DISTILLED_TOP).sentiment.lr$(l).s$(s).pt)) \
	$(foreach t,boolq sms-spam,$(ZOO)/$(DISTILLED_TOP).$(t).lr5e-4.s0.pt)
# BoolQ's pairs need longer transfer rows (and get no corpus windows: those are single texts).
DISTILL_boolq := --transfer-length 128
# Shipped as models/<name>-sentiment.pt: zoo row -> name (the default is the distilled student).
SHIP := distilled-uno-eelbert-ngrams=uno-eelbert-ngrams uno-eelbert=uno-eelbert
.SECONDARY:

.PHONY: data zoo
data: $(STAMP)
	$(EE) data prepare --out data

# The stem names the run: CONFIG.TASK.lrLR.sSEED.
$(LABEL_RUNS): $(ZOO)/%.pt: | $(STAMP)
	mkdir -p $(@D)
	set -- $(subst ., ,$*); OMP_NUM_THREADS=1 $(EE) train finetune --init $$1 --task $$2 \
	  --lr $${3#lr} --seed $${4#s} --steps $(STEPS_$(word 2,$(subst ., ,$*))) $(FINETUNE) \
	  --out $@ 2> $(@:.pt=.log)

$(TEACHERS)/minilm-%: | $(STAMP)
	$(EE) data teacher
	mkdir -p $(@D)
	$(EE) train teacher --task $* --out $@ --data data --force 2> $@.log

.SECONDEXPANSION:
$(DISTILLED_RUNS): $(ZOO)/distilled-%.pt: $$(TEACHERS)/minilm-$$(word 2,$$(subst ., ,$$*)) | $(STAMP)
	mkdir -p $(@D)
	set -- $(subst ., ,$*); OMP_NUM_THREADS=1 $(EE) train distill --teacher $< --init $$1 \
	  --task $$2 --lr $${3#lr} --seed $${4#s} $(DISTILL) \
	  $(DISTILL_$(word 2,$(subst ., ,$*))) --out $@ 2> $(@:.pt=.log)

zoo: $(LABEL_RUNS) $(DISTILLED_RUNS)
	$(EE) compare --runs $(ZOO) --json $(ZOO)/comparison.json --force | tee $(ZOO)/comparison.md
	$(BIN)/python -c 'import json, shutil, sys; rows = json.load(open(sys.argv[1]))["rows"]; \
	  [shutil.copy(rows[r]["sentiment"]["path"], f"models/{m}-sentiment.pt") \
	   for r, m in (a.split("=") for a in sys.argv[2:])]' $(ZOO)/comparison.json $(SHIP)
	for m in $(foreach s,$(SHIP),$(lastword $(subst =, ,$(s)))); do \
	  $(EE) card models/$$m-sentiment.pt --task sentiment > models/$$m-sentiment.md; done
