"""The address bar's rule: an address opens, anything else is searched for, nothing is lost."""

from __future__ import annotations

import pytest

from sandbox_app.core.contexts import DEFAULT_SEARCH, Profile
from sandbox_app.core.errors import UsageError
from sandbox_app.core.session import address_to_url

S = "https://search.example/?q=%s"


@pytest.mark.parametrize(("typed", "url"), [
    (" example.org/a?b ", "https://example.org/a?b"),
    ("localhost:8080/x", "https://localhost:8080/x"),
    ("localhost", "https://localhost"),
    ("10.0.0.1:8000", "https://10.0.0.1:8000"),
    ("::1", "https://[::1]"),
    ("http://shop.test/", "http://shop.test/"),
    ("data:text/html,<b>x</b>", "data:text/html,<b>x</b>"),
    ("about:blank", "about:blank"),
    ("data:text/html,<p style='x'>a b</p>", "data:text/html,<p style='x'>a b</p>"),
    ("https://example.org/a b", "https://example.org/a b"),
    ("javascript:alert(1)", "javascript:alert(1)"),
    ("two words", "https://search.example/?q=two+words"),
    ("weather", "https://search.example/?q=weather"),
    ("c++ & rust?", "https://search.example/?q=c%2B%2B+%26+rust%3F"),
    ("what is example.org", "https://search.example/?q=what+is+example.org"),
    ("", ""),
    ("   ", ""),
])
def test_address_or_search(typed: str, url: str) -> None:
    assert address_to_url(typed, S) == url


def test_default_search_engine_is_set_and_profiles_check_theirs() -> None:
    assert Profile(name="p").validate().search == DEFAULT_SEARCH
    for bad in ("ftp://x/?q=%s", "https://x/?q=", "https://x/ ?q=%s"):
        with pytest.raises(UsageError):
            Profile(name="p", search=bad).validate()


def test_dns_setting_is_validated() -> None:
    assert Profile(name="p", dns=("9.9.9.9", "2620:fe::fe")).validate().dns == (
        "9.9.9.9", "2620:fe::fe")
    for bad in (("not-an-ip",), ("1.1.1.1",) * 4):
        with pytest.raises(UsageError):
            Profile(name="p", dns=bad).validate()
    profile = Profile(name="p", dns=("10.0.0.53",))
    again = Profile.from_toml("p", profile.to_toml())
    assert again.dns == ("10.0.0.53",) and again.search == DEFAULT_SEARCH
    assert Profile.from_toml("p", Profile(name="p").to_toml()).dns == ()
