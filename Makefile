# Blank Slate: `make run` starts the app, `make test` runs the checks and the test suite.
# Both do all set-up on a fresh Debian 12 machine, as a normal user with sudo (sudo is asked
# only for apt-get) or as root. The app, the image builds and the tests run as the user.

SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
BS    := $(VENV)/bin/blankslate
SUDO  := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian's own Python: the venv must work for every user (a root-only pyenv would not).
PYTHON ?= $(shell [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3)
IMAGE ?= browser

# Debian packages the app, the image recipes and the tests need.
DEB_PKGS := qemu-system-x86 qemu-utils qemu-guest-agent busybox-static e2fsprogs cpio \
            mmdebstrap uidmap passt nftables iproute2 dnsmasq-base python3-venv python3-pip \
            xvfb xauth \
            desktop-file-utils appstream libegl1 libxkbcommon0 libxkbcommon-x11-0 \
            libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libdbus-1-3 \
            libfontconfig1 libgl1

.PHONY: run test system venv image lint typecheck pytest bench install uninstall clean

run: system venv image
	$(BS) gui

test: system venv lint typecheck pytest

system:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing: $$missing"; \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) && $(PY) -c '' 2>/dev/null || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Builds the image, or checks that the built one is current (a changed recipe rebuilds it).
# No root: the browser recipe uses mmdebstrap's unshare mode.
image: venv
	$(BS) image build $(IMAGE)

lint: venv
	$(VENV)/bin/ruff check sandbox_app vm_images tests benchmarks packaging

typecheck: venv
	$(VENV)/bin/mypy

# As an unprivileged user (the test user when run as root), then the root-only tests.
pytest: venv
	$(PY) tests/run_suite.py $(PYTEST_ARGS)

# Cold boot vs restore on the tiny image (built first if missing: a few minutes). The other
# benchmarks in benchmarks/ find or build what they need the same way (benchmarks/_home.py).
bench: system venv
	$(PY) benchmarks/startup.py

# Install for the current user (PREFIX=~/.local: where a Debian desktop looks for programs,
# menu entries, icons, man pages and bash completions), or for everyone with
# `sudo make install PREFIX=/usr/local`; DESTDIR stages the whole tree for a package. The app
# runs from its own venv in PREFIX/share/blankslate/venv; the man page and the shell
# completions are made from the argument parser (packaging/generate.py).
PREFIX  ?= $(HOME)/.local
DESTDIR ?=
APPID   := org.blankslate.BlankSlate
APPDIR  := $(PREFIX)/share/blankslate/venv
DEST    := $(DESTDIR)$(PREFIX)
GEN     := build/generated

install: system venv
	rm -rf $(GEN) && $(PY) packaging/generate.py $(GEN) >/dev/null
	$(PYTHON) -m venv $(DESTDIR)$(APPDIR)
	$(DESTDIR)$(APPDIR)/bin/pip install -q --upgrade pip
	$(DESTDIR)$(APPDIR)/bin/pip install -q .
	@# a staged venv must name its final place in its scripts, not the staging one
	if [ -n "$(DESTDIR)" ]; then grep -rlF '$(DESTDIR)' $(DESTDIR)$(APPDIR)/bin \
	    $(DESTDIR)$(APPDIR)/pyvenv.cfg | xargs -r sed -i 's|$(DESTDIR)||g'; fi
	install -d $(DEST)/bin $(DEST)/share/applications $(DEST)/share/metainfo \
	    $(DEST)/share/icons/hicolor/scalable/apps $(DEST)/share/man/man1 \
	    $(DEST)/share/bash-completion/completions $(DEST)/share/zsh/site-functions
	ln -sf $(APPDIR)/bin/blankslate $(DEST)/bin/blankslate
	sed 's|^Exec=blankslate|Exec=$(PREFIX)/bin/blankslate|' packaging/$(APPID).desktop \
	    > $(DEST)/share/applications/$(APPID).desktop
	install -m 644 packaging/$(APPID).metainfo.xml $(DEST)/share/metainfo/
	install -m 644 sandbox_app/icons/blankslate.svg \
	    $(DEST)/share/icons/hicolor/scalable/apps/$(APPID).svg
	for s in 16 32 48 64 128 256; do \
	    install -D -m 644 sandbox_app/icons/blankslate-$$s.png \
	        $(DEST)/share/icons/hicolor/$${s}x$${s}/apps/$(APPID).png; \
	done
	install -m 644 $(GEN)/blankslate.1 $(DEST)/share/man/man1/blankslate.1
	install -m 644 $(GEN)/blankslate.bash $(DEST)/share/bash-completion/completions/blankslate
	install -m 644 $(GEN)/_blankslate $(DEST)/share/zsh/site-functions/_blankslate
	if [ -z "$(DESTDIR)" ]; then update-desktop-database -q $(DEST)/share/applications || true; fi
	@echo "installed: $(PREFIX)/bin/blankslate, the menu entry 'Blank Slate', man blankslate,"
	@echo "bash and zsh completions (zsh: add $(PREFIX)/share/zsh/site-functions to fpath)"

uninstall:
	rm -rf $(DEST)/share/blankslate $(DEST)/bin/blankslate \
	    $(DEST)/share/applications/$(APPID).desktop \
	    $(DEST)/share/metainfo/$(APPID).metainfo.xml $(DEST)/share/man/man1/blankslate.1 \
	    $(DEST)/share/bash-completion/completions/blankslate \
	    $(DEST)/share/zsh/site-functions/_blankslate
	find $(DEST)/share/icons/hicolor -name '$(APPID).*' -delete

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
