from __future__ import annotations

import hashlib

import pytest

from shared.naming import (
    DNS1123_LABEL,
    GITLAB_PATH,
    LABEL_VALUE,
    check_gitlab_group,
    dns1123_name,
    gitlab_path,
    label_value,
    slugify,
    suffixed_name,
    workload_name,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("My Service", "my-service"),
        ("web.api_v2", "web-api-v2"),
        ("  spaced   out  ", "spaced-out"),
        ("--already-slug--", "already-slug"),
        ("a--b", "a--b"),
        ("Café Crème", "caf-cr-me"),
        ("服务 web", "web"),
        ("服务", ""),
        ("", ""),
    ],
)
def test_slugify(text: str, expected: str) -> None:
    assert slugify(text) == expected


def test_dns1123_name_joins_slugs() -> None:
    assert dns1123_name("Shop", "Web Service") == "shop-web-service"
    assert dns1123_name("shop", "服务", "api") == "shop-api"  # empty slugs are skipped


def test_dns1123_name_is_deterministic_and_valid_for_odd_input() -> None:
    for parts in [("a",), ("A_B", "c.d"), ("x" * 200,), ("Ünïcödé", "name"), ("0", "9")]:
        name = dns1123_name(*parts)
        assert name == dns1123_name(*parts)
        assert DNS1123_LABEL.match(name)
        assert len(name) <= 63


def test_dns1123_name_cuts_long_names_with_hash() -> None:
    project, service = "p" * 40, "s" * 40
    full = f"{project}-{service}"
    name = dns1123_name(project, service)
    assert len(name) == 63
    assert name.endswith("-" + hashlib.sha256(full.encode()).hexdigest()[:8])
    assert name.startswith("p" * 40 + "-" + "s" * 13)
    assert DNS1123_LABEL.match(name)


def test_cut_names_sharing_a_prefix_differ() -> None:
    common = "a-very-long-project-name-that-goes-on-and-on-and-on-and-on-and"
    first = dns1123_name(common, "service-one")
    second = dns1123_name(common, "service-two")
    assert first != second
    assert first[:54] == second[:54]
    assert len(first) <= 63 and len(second) <= 63


def test_cut_never_leaves_a_dash_before_the_hash() -> None:
    name = dns1123_name("a" * 53, "b" * 20)  # the cut falls right after the joining dash
    assert "--" not in name
    assert DNS1123_LABEL.match(name)


def test_dns1123_name_respects_max_len() -> None:
    assert len(dns1123_name("x" * 100, max_len=20)) == 20
    assert dns1123_name("short", max_len=20) == "short"
    with pytest.raises(ValueError, match="too small"):
        dns1123_name("x" * 100, max_len=5)


@pytest.mark.parametrize("parts", [(), ("",), ("服务",), ("---", "  ")])
def test_dns1123_name_refuses_empty(parts: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="at least one letter or digit"):
        dns1123_name(*parts)


def test_workload_name() -> None:
    assert workload_name("shop", "web-service") == "shop-web-service"
    assert workload_name("shop", "web-service", "stable") == "shop-web-service"
    assert workload_name("shop", "web-service", "canary") == "shop-web-service-canary"
    assert workload_name("Shop", "Web Service") == "shop-web-service"


def test_workload_name_long_keeps_track_suffix_and_limit() -> None:
    stable = workload_name("p" * 50, "service " * 10)
    canary = workload_name("p" * 50, "service " * 10, "canary")
    assert len(stable) <= 63 and len(canary) <= 63
    assert canary.endswith("-canary")
    assert DNS1123_LABEL.match(stable) and DNS1123_LABEL.match(canary)
    assert stable != canary


def test_workload_name_refuses_empty_track() -> None:
    with pytest.raises(ValueError, match="needs at least one letter or digit"):
        workload_name("shop", "web", "  ")


def test_suffixed_name() -> None:
    assert suffixed_name("shop-web", "config") == "shop-web-config"
    long = suffixed_name("w" * 63, "secret")
    assert len(long) == 63 and long.endswith("-secret") and DNS1123_LABEL.match(long)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("webservice0310", "webservice0310"),
        ("web service", "web-service"),
        ("web.api_v2", "web.api_v2"),
        ("web..api", "web-api"),
        ("_web-", "web"),
        (".hidden.", "hidden"),
        ("Web API", "web-api"),
        ("site.git", "site-git"),
        ("feed.atom", "feed-atom"),
        ("服务 web", "web"),
    ],
)
def test_gitlab_path(code: str, expected: str) -> None:
    path = gitlab_path("acme/shop", code)
    assert path == expected
    assert GITLAB_PATH.match(path)


def test_gitlab_path_long_and_empty() -> None:
    path = gitlab_path("acme", "x" * 300)
    assert len(path) == 255 and GITLAB_PATH.match(path)
    with pytest.raises(ValueError, match="GitLab path"):
        gitlab_path("acme", "..")


@pytest.mark.parametrize("group", ["", "/acme", "acme/", "acme/../etc", ".acme", "a b", "acme//x"])
def test_bad_gitlab_groups_are_refused(group: str) -> None:
    with pytest.raises(ValueError, match="not a GitLab group path"):
        check_gitlab_group(group)
    with pytest.raises(ValueError, match="not a GitLab group path"):
        gitlab_path(group, "web")


def test_good_gitlab_groups() -> None:
    for group in ["acme", "acme/shop", "Acme_Corp/platform.team", "a/b/c"]:
        assert check_gitlab_group(group) == group


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024.5.1-120000-main", "2024.5.1-120000-main"),
        ("v1.2.0+build.7", "v1.2.0-build.7"),
        ("-weird_", "weird"),
        ("", ""),
    ],
)
def test_label_value(text: str, expected: str) -> None:
    assert label_value(text) == expected
    assert LABEL_VALUE.match(label_value(text))


def test_label_value_long() -> None:
    value = label_value("v" + "1." * 60)
    assert len(value) <= 63 and LABEL_VALUE.match(value)
