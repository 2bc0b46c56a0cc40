"""A user's journeys through the real product: the browser image, restored from its snapshot,
browsing a small web of test hosts in network namespaces (``tests/world.py``).

The app runs as the unprivileged test user, through the real ``blankslate`` command (and, for
quick reset, the runner the tray uses); the web servers record what reached them, so every
assertion is about what really crossed the network.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtGui import QColor, QImage
from world import World, run_in_host, unprivileged_user
from world_servers import (
    FILE_BYTES,
    FILE_NAME,
    FORM_COLOR,
    LOGGED_IN,
    LOGGED_OUT,
    OTHER_COLOR,
    SHOP_COLOR,
)

pytestmark = [pytest.mark.root, pytest.mark.browser, pytest.mark.timeout(1800)]

Bs = Callable[..., dict]  # type: ignore[type-arg]


def _env(home: Path) -> dict[str, str]:
    return {"BLANKSLATE_HOME": str(home), "BLANKSLATE_ACCEL": "tcg",
            "BLANKSLATE_KEYRING": "off", "LANG": "C.UTF-8"}


@pytest.fixture
def bs(user_home: Path) -> Bs:
    """``bs(*args)``: the real ``blankslate`` command, as the test user, in the host netns."""
    def run(*args: str, expect: int = 0) -> dict:  # type: ignore[type-arg]
        proc = run_in_host([sys.executable, "-m", "sandbox_app", *args], _env(user_home),
                           timeout=600)
        assert proc.returncode == expect, proc.stderr
        assert "Traceback" not in proc.stderr
        return json.loads(proc.stdout) if "--json" in args and proc.stdout else {}
    return run


def _shot_dir(user_home: Path) -> Path:
    return user_home.parent


def _color(path: Path) -> str:
    image = QImage(str(path))
    assert not image.isNull(), f"no screenshot at {path}"
    # The page is one colour edge to edge; away from the pointer (mid-screen).
    colors = {QColor(image.pixel(x, y)).name() for x, y in ((60, 700), (1200, 60), (1200, 700))}
    assert len(colors) == 1, colors
    return colors.pop()


def _browse(bs: Bs, ctx: str, url: str, user_home: Path, *extra: str) -> tuple[dict, str]:  # type: ignore[type-arg]
    shot = _shot_dir(user_home) / f"{ctx}-{time.monotonic_ns()}.png"
    t0 = time.monotonic()
    report = bs("run", ctx, "--headless", "--json", "--url", url, "--screenshot", str(shot),
                *extra)
    report["wall_s"] = time.monotonic() - t0
    return report, _color(shot)


def test_runs_as_the_unprivileged_user(world: World) -> None:
    user = unprivileged_user()
    assert user is not None and user.pw_uid != 0
    proc = run_in_host(["id", "-u"], {})
    assert proc.stdout.strip() == str(user.pw_uid)


def test_page_by_name_through_the_network(world: World, bs: Bs, user_home: Path) -> None:
    bs("context", "create", "shop", "--image", "browser")
    before = len(world.requests("shop"))
    report, color = _browse(bs, "shop", "http://shop.test/", user_home)
    assert color == SHOP_COLOR
    got = world.requests("shop")[before:]
    assert [r["path"] for r in got] == ["/"] and got[0]["host"] == "shop.test"
    assert report["restore_s"] is not None and report["network_s"] is not None
    # QEMU start → restored, → lease applied; the page: request → drawn and still 0.8 s.
    print(f"\nrestore {report['restore_s']:.3f} s, lease {report['network_s']:.3f} s, "
          f"page {report['url_s'][0]:.2f} s, whole run {report['wall_s']:.1f} s")


def test_ipv6_where_the_host_has_it(world: World, bs: Bs, user_home: Path) -> None:
    # shop-v6.test has only an AAAA record: the page comes over IPv6 (SLAAC from passt).
    bs("context", "create", "six", "--image", "browser")
    before = len(world.requests("shop6"))
    _, color = _browse(bs, "six", "http://shop-v6.test/", user_home)
    assert color == SHOP_COLOR
    assert len(world.requests("shop6")) == before + 1


def test_address_bar_words_become_a_search(world: World, bs: Bs, user_home: Path) -> None:
    bs("context", "create", "find", "--image", "browser",
       "--search", "http://shop.test/search?q=%s")
    report, _ = _browse(bs, "find", "cheap red shoes", user_home)
    assert report["url"] == "http://shop.test/search?q=cheap+red+shoes"
    assert world.requests("shop")[-1]["path"] == "/search?q=cheap+red+shoes"


def test_context_dns_setting_picks_the_resolver(world: World, bs: Bs, user_home: Path) -> None:
    # The host's resolver (203.0.113.2) says shop.test is 203.0.113.2; this one says .5.
    bs("context", "create", "private", "--image", "browser", "--dns", "203.0.113.4")
    before = len(world.requests("other"))
    _, color = _browse(bs, "private", "http://shop.test/", user_home)
    assert color == OTHER_COLOR
    assert len(world.requests("other")) == before + 1


def _cookie_seen(world: World, since: int) -> bool:
    checks = [r for r in world.requests("shop")[since:] if r["path"] == "/check"]
    assert len(checks) == 1
    return "sid=" in checks[0]["cookie"]


def test_login_cookie_survives_keep_only(world: World, bs: Bs, user_home: Path) -> None:
    for name in ("kept", "thrown", "elsewhere"):
        bs("context", "create", name, "--image", "browser")
    # Keep: the cookie is there in the next session.
    _, color = _browse(bs, "kept", "http://shop.test/login", user_home, "--on-exit", "keep")
    assert color == LOGGED_IN
    n = len(world.requests("shop"))
    _, color = _browse(bs, "kept", "http://shop.test/check", user_home)
    assert color == LOGGED_IN and _cookie_seen(world, n)
    # Another context never sees it.
    n = len(world.requests("shop"))
    _, color = _browse(bs, "elsewhere", "http://shop.test/check", user_home)
    assert color == LOGGED_OUT and not _cookie_seen(world, n)
    # Discard: gone.
    _browse(bs, "thrown", "http://shop.test/login", user_home, "--on-exit", "discard")
    n = len(world.requests("shop"))
    _, color = _browse(bs, "thrown", "http://shop.test/check", user_home)
    assert color == LOGGED_OUT and not _cookie_seen(world, n)


QUICK_RESET = textwrap.dedent("""
    import asyncio, json
    from sandbox_app.core.storage import Paths
    from sandbox_app.core.session import ContextRunner

    async def main():
        runner = ContextRunner(Paths.from_env().ensure(), "reset")
        session = await runner.start()
        await session.open_url("http://shop.test/login")
        session = await runner.quick_reset()
        await session.open_url("http://shop.test/check")
        await runner.stop(keep=False)
        await runner.close()

    asyncio.run(main())
""")


def test_quick_reset_forgets_the_login(world: World, bs: Bs, user_home: Path) -> None:
    bs("context", "create", "reset", "--image", "browser")
    n = len(world.requests("shop"))
    proc = run_in_host([sys.executable, "-c", QUICK_RESET], _env(user_home), timeout=600)
    assert proc.returncode == 0, proc.stderr
    paths = [r["path"] for r in world.requests("shop")[n:]]
    assert paths == ["/login", "/check"]
    assert not _cookie_seen(world, n)


def test_download_comes_out_byte_identical(world: World, bs: Bs, user_home: Path) -> None:
    bs("context", "create", "dl", "--image", "browser")
    out = _shot_dir(user_home) / "saved"
    out.mkdir()
    user = unprivileged_user()
    if user is not None:
        os.chown(out, user.pw_uid, user.pw_gid)
    wait = (f"for i in $(seq 100); do [ -f /home/browser/Downloads/{FILE_NAME} ] && "
            "! ls /home/browser/Downloads/*.part >/dev/null 2>&1 && exit 0; sleep 0.2; "
            "done; exit 1")
    report = bs("run", "dl", "--headless", "--json", "--url", "http://shop.test/file.bin",
                "--exec", wait, "--save-downloads", str(out))
    assert report["exec"][0]["exit_code"] == 0, "Firefox did not download the file"
    assert (out / FILE_NAME).read_bytes() == FILE_BYTES
    assert report["saved"] == [str(out / FILE_NAME)]


def test_no_network_policy_reaches_nothing(world: World, bs: Bs, user_home: Path) -> None:
    bs("context", "create", "offline", "--image", "browser", "--network", "none")
    n = len(world.requests())
    _, color = _browse(bs, "offline", "http://shop.test/", user_home)
    assert color != SHOP_COLOR
    assert world.requests()[n:] == []


def test_tls_hellos_never_repeat_across_restored_sessions(world: World, bs: Bs,
                                                          user_home: Path) -> None:
    """Two sessions restored from one snapshot must not replay the browser's randomness."""
    bs("context", "create", "tls", "--image", "browser")
    per_session = []
    for _ in range(2):
        n = len(world.hellos())
        # Other names, so that each error page differs from the one before.
        bs("run", "tls", "--headless", "--json", "--url", "https://a.tls.test/",
           "--url", "https://b.tls.test/", "--url", "https://c.tls.test/")
        hellos = world.hellos()[n:]
        assert hellos and all("random" in h for h in hellos), hellos
        per_session.append(hellos)
    randoms = [h["random"] for s in per_session for h in s]
    shares = [k for s in per_session for h in s for k in h["key_shares"]]
    assert len(set(randoms)) == len(randoms), "a ClientHello random repeated"
    assert shares and len(set(shares)) == len(shares), "a TLS key share repeated"
    print(f"\n{len(randoms)} ClientHellos ({[len(s) for s in per_session]} per session), "
          f"{len(shares)} key shares, all distinct")


def test_kept_context_comes_back_on_the_same_page_with_its_form_text(
        world: World, bs: Bs, user_home: Path) -> None:
    bs("context", "create", "form", "--image", "browser")
    text = f"kept {os.getpid()}"
    before_keep = _shot_dir(user_home) / "form-before.png"
    report = bs("run", "form", "--headless", "--json", "--on-exit", "keep",
                "--url", f"http://shop.test/form?text={text.replace(' ', '+')}",
                "--screenshot", str(before_keep))
    assert report["on_exit"] == "keep"
    n = len(world.requests("shop"))
    after_restore = _shot_dir(user_home) / "form-after.png"
    bs("run", "form", "--headless", "--json", "--screenshot", str(after_restore))
    # The same page, text and all, from the kept RAM: nothing was fetched again.
    assert world.requests("shop")[n:] == []
    a, b = QImage(str(before_keep)), QImage(str(after_restore))
    assert not a.isNull() and a.size() == b.size()
    assert QColor(a.pixel(1200, 700)).name() == FORM_COLOR
    differing = sum(a.pixel(x, y) != b.pixel(x, y)
                    for x in range(0, a.width(), 4) for y in range(0, a.height(), 4))
    assert differing == 0, f"{differing} sampled pixels differ after the restore"
