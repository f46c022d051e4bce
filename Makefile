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

.PHONY: demo test install install-test fonts lint clean

demo: install
	$(PYTHON) scripts/demo.py --out $(DEMO_DIR)

test: install-test lint
	$(PYTHON) -m pytest -q

install: fonts
	$(PIP) install -q --disable-pip-version-check -e .

install-test: install
	$(PIP) install -q --disable-pip-version-check -e '.[test]'

# Best effort: needs root (or passwordless sudo) and apt; skipped otherwise.
fonts:
	@if dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  echo "fonts: Debian font packages already installed"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "fonts: no apt-get; using the fonts matplotlib ships"; \
	else \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" = none ]; then echo "fonts: not root; using the fonts matplotlib ships"; \
	  else echo "fonts: installing Debian font packages (optional)"; \
	    ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null ) \
	      || echo "fonts: apt-get failed; continuing with the fonts matplotlib ships"; \
	  fi; \
	fi

lint:
	$(PYTHON) -m ruff check persec tests benchmarks scripts
	$(PYTHON) -m ruff format --check persec tests benchmarks scripts

clean:
	rm -rf runs .pytest_cache .ruff_cache build *.egg-info
