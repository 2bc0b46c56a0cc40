# Blank Slate: `make run` starts the app, `make test` runs the checks and the test suite.
# Both do all set-up on a fresh Debian 12 machine (root, or a user with sudo).

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
            debootstrap passt nftables iproute2 python3-venv python3-pip xvfb xauth \
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

# The browser recipe needs root (debootstrap, chroot). As a sudo user, build it as root into
# this user's own directories, then hand them back.
BS_DIRS := "$${XDG_DATA_HOME:-$$HOME/.local/share}/blankslate" \
           "$${XDG_CONFIG_HOME:-$$HOME/.config}/blankslate" \
           "$${XDG_STATE_HOME:-$$HOME/.local/state}/blankslate"

image: venv
	@$(BS) image list --json | grep -q '"name": "$(IMAGE)"' || \
	if [ -z "$(SUDO)" ] || [ "$(IMAGE)" = tiny ]; then $(BS) image build $(IMAGE); \
	else sudo --preserve-env=HOME,XDG_DATA_HOME,XDG_CONFIG_HOME,XDG_STATE_HOME,BLANKSLATE_HOME \
	         $(BS) image build $(IMAGE) && \
	     sudo chown -R "$$(id -u):$$(id -g)" $(if $(BLANKSLATE_HOME),"$(BLANKSLATE_HOME)",$(BS_DIRS)); fi

lint: venv
	$(VENV)/bin/ruff check sandbox_app vm_images tests benchmarks

typecheck: venv
	$(VENV)/bin/mypy

# As an unprivileged user (the test user when run as root), then the root-only tests.
pytest: venv
	$(PY) tests/run_suite.py $(PYTEST_ARGS)

bench: system venv
	$(PY) benchmarks/startup.py

# Install for the current user, where a Debian desktop looks: ~/.local/bin, the menu, icons.
PREFIX ?= $(HOME)/.local
APPID  := org.blankslate.BlankSlate
APPDIR := $(PREFIX)/share/blankslate/venv

install: system
	python3 -m venv $(APPDIR)
	$(APPDIR)/bin/pip install -q --upgrade pip
	$(APPDIR)/bin/pip install -q .
	mkdir -p $(APPDIR)/share/blankslate $(PREFIX)/bin $(PREFIX)/share/applications \
	    $(PREFIX)/share/metainfo $(PREFIX)/share/icons/hicolor/scalable/apps
	rm -rf $(APPDIR)/share/blankslate/vm_images
	cp -r vm_images $(APPDIR)/share/blankslate/vm_images
	ln -sf $(APPDIR)/bin/blankslate $(PREFIX)/bin/blankslate
	sed 's|^Exec=blankslate|Exec=$(PREFIX)/bin/blankslate|' packaging/$(APPID).desktop \
	    > $(PREFIX)/share/applications/$(APPID).desktop
	cp packaging/$(APPID).metainfo.xml $(PREFIX)/share/metainfo/
	cp resources/icons/blankslate.svg $(PREFIX)/share/icons/hicolor/scalable/apps/$(APPID).svg
	for s in 16 32 48 64 128 256; do \
	    mkdir -p $(PREFIX)/share/icons/hicolor/$${s}x$${s}/apps; \
	    cp resources/icons/blankslate-$$s.png $(PREFIX)/share/icons/hicolor/$${s}x$${s}/apps/$(APPID).png; \
	done
	-update-desktop-database -q $(PREFIX)/share/applications 2>/dev/null
	@echo "installed: $(PREFIX)/bin/blankslate and the menu entry 'Blank Slate'"

uninstall:
	rm -rf $(APPDIR) $(PREFIX)/bin/blankslate $(PREFIX)/share/applications/$(APPID).desktop \
	    $(PREFIX)/share/metainfo/$(APPID).metainfo.xml
	find $(PREFIX)/share/icons/hicolor -name '$(APPID).*' -delete

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
