"""The test suite as ``make test`` runs it: as a normal user, the way people use the app.

    python tests/run_suite.py [PYTEST ARGS...]

1. Picks the unprivileged user: yourself, or under root the sudo user (``SUDO_USER``) or
   ``blankslate-test``, created with a home and subordinate ids like any Debian user.
2. As that user, with a normal user's PATH (no /usr/sbin, /sbin): builds the tiny and the
   browser image into the test cache when missing or stale, then runs every test not
   marked ``root``.
3. As root (directly, or through sudo): the tests marked ``root`` (network namespaces, loop
   mounts); they run the app itself as the same unprivileged user.

The exit code is non-zero when any step failed.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_USER = "blankslate-test"
USER_PATH = "/usr/local/bin:/usr/bin:/bin"
PASS_ENV = ("CI", "TERM", "LANG", "LC_ALL", "PYTEST_ADDOPTS", "BLANKSLATE_QEMU")


def say(msg: str) -> None:
    print(f"run_suite: {msg}", file=sys.stderr, flush=True)


def ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    say(f"creating the unprivileged test user '{name}'")
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
    if name not in Path("/etc/subuid").read_text():  # mmdebstrap's unshare mode needs them
        subprocess.run(["usermod", "--add-subuids", "200000-265535", "--add-subgids",
                        "200000-265535", name], check=True)
    return pwd.getpwnam(name)


def main(args: list[str]) -> int:
    root = os.geteuid() == 0
    if root:
        user = ensure_user(os.environ.get("SUDO_USER") or TEST_USER)
    else:
        user = pwd.getpwuid(os.getuid())
    cache = Path(os.environ.get("BLANKSLATE_TEST_CACHE")
                 or Path(user.pw_dir) / ".cache" / "blankslate-tests")
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name, PATH=USER_PATH,
               BLANKSLATE_TEST_CACHE=str(cache), BLANKSLATE_TEST_USER=user.pw_name,
               BLANKSLATE_ACCEL="tcg")
    prefix: list[str] = []
    if root:
        # What logind gives a user who logs in: a private runtime directory.
        runtime = Path(f"/run/user/{user.pw_uid}")
        runtime.mkdir(parents=True, exist_ok=True)
        os.chown(runtime, user.pw_uid, user.pw_gid)
        runtime.chmod(0o700)
        env["XDG_RUNTIME_DIR"] = str(runtime)
        prefix = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                  "--init-groups", "--inh-caps=-all"]
    elif os.environ.get("XDG_RUNTIME_DIR"):
        env["XDG_RUNTIME_DIR"] = os.environ["XDG_RUNTIME_DIR"]
    py = [sys.executable]
    pytest = [*py, "-m", "pytest", "-p", "no:cacheprovider"]
    say(f"as {user.pw_name} (uid {user.pw_uid}): images into {cache}")
    for image in ("tiny", "browser"):
        step = subprocess.run([*prefix, *py, "-m", "sandbox_app", "image", "build", image],
                              env={**env, "BLANKSLATE_HOME": str(cache / "home")}, cwd=REPO,
                              check=False)
        if step.returncode != 0:
            say(f"building the {image} image as {user.pw_name} failed")
            return step.returncode
    say(f"as {user.pw_name} (uid {user.pw_uid}): the tests not marked 'root'")
    failed = subprocess.run([*prefix, *pytest, "-m", "not slow and not root", *args],
                            env=env, cwd=REPO, check=False).returncode not in (0, 5)
    # Root's own identity (pytest's temp dir, HOME), and what tells it who the user is.
    shared = {k: env[k] for k in env if k.startswith("BLANKSLATE_") or k in PASS_ENV}
    if root:
        sudo: list[str] = []
    elif shutil.which("sudo"):
        sudo = ["sudo", "--preserve-env=" + ",".join(sorted(shared))]
    else:
        say("no sudo: the tests marked 'root' (network namespaces) were NOT run")
        return 1
    say(f"as root: the tests marked 'root' (the app under test runs as {user.pw_name})")
    root_env = {**{k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}, **shared}
    failed |= subprocess.run([*sudo, *pytest, "-m", "not slow and root", *args],
                             env=root_env, cwd=REPO, check=False).returncode not in (0, 5)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
