"""``shared.yaml_text.dump_blocks`` writes what ``yaml.dump_all`` writes, byte for byte, for any
document: the ones it writes itself and the ones it leaves to PyYAML (floats, spaces, line breaks,
anchors, lists in lists, long keys)."""

from __future__ import annotations

import collections
import enum
import random
from typing import Any

import pytest
import yaml

from services.deploy.manifests import render_objects
from shared import yaml_text
from shared.yaml_text import SAFE_DUMPER, dump_blocks
from tests.unit.test_manifest_writing import UNUSUAL
from tests.unit.test_manifests import make_spec

ATOMS: list[Any] = [
    *("600", "true", "", "yes", "null", "1.5", "0x1F", "2026-01-01", "-x", ":x", "#c", "x#y", "*a", "&a", "!t"),
    *("%x", "@x", "`x", "|x", ">x", "'q'", '"q"', "[x", "{x", "a,b", "ü", "tab\tx", "a:b", "http://x", "-", "~"),
    *(".5", "1e3", "NO", "off", "=", "<<", "?x", "x?", "é✓", "yEs", "Null", "a" * 40, "1.2.3", "x" * 130),
    *("registry.local/shop/web:1.2.3", "cG9zdGdyZXM6Ly91OnBAaC9kYg==", "a b", "a\nb", "ctrl\x07"),
    *(3, -4, 0, True, False, None, 1.5),
]
KEYS = [atom for atom in ATOMS if isinstance(atom, str)] + [f"k{n}" for n in range(5)]


def _reference(documents: list[Any], *, sort_keys: bool = True, explicit_start: bool = True) -> str:
    """What Gantry wrote before the block writer: libyaml's dumper where PyYAML has it (its
    pure-Python dumper writes an empty key otherwise, as "? ''")."""
    options = {"explicit_start": explicit_start, "sort_keys": sort_keys, "allow_unicode": True}
    return str(yaml.dump_all(documents, Dumper=SAFE_DUMPER, **options))


def _document(rnd: random.Random, depth: int = 0) -> Any:
    pick = rnd.random()
    if depth > 3 or pick < 0.4:
        return rnd.choice([*ATOMS, {}, []])
    if pick < 0.75:
        return {rnd.choice(KEYS): _document(rnd, depth + 1) for _ in range(rnd.randint(0, 4))}
    return [_document(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]


@pytest.mark.parametrize("seed", range(4))
def test_random_documents_are_written_as_pyyaml_writes_them(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(500):
        documents = [_document(rnd) for _ in range(rnd.randint(1, 3))]
        documents = [d if isinstance(d, dict) and d else {"k": d} for d in documents]
        shared = [documents[0]]
        if rnd.random() < 0.1:  # the same list twice in one document: an anchor and an alias
            shared = [{"a": documents[0], "b": documents[0]}]
        for sort_keys in (True, False):
            assert dump_blocks(documents, sort_keys=sort_keys) == _reference(documents, sort_keys=sort_keys)
            alone = dump_blocks(shared, sort_keys=sort_keys, explicit_start=False)
            assert alone == _reference(shared, sort_keys=sort_keys, explicit_start=False)


def test_manifests_are_written_by_the_block_writer_itself_as_pyyaml_would(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render_objects(make_spec(resources={"db": {"type": "database", "data": {"url": "postgres://u:p@h/db"}}}))
    unusual = render_objects(make_spec(resources={**UNUSUAL}))
    expected, expected_unusual = _reference(objects), _reference(unusual)
    left_to_pyyaml: list[object] = []
    dump_all = yaml.dump_all

    def counted(documents: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(documents[0], dict):  # a whole document, not one scalar's style
            left_to_pyyaml.append(documents)
        return dump_all(documents, *args, **kwargs)

    monkeypatch.setattr(yaml_text.yaml, "dump_all", counted)
    assert dump_blocks(objects) == expected
    assert left_to_pyyaml == [], "an ordinary manifest needs no PyYAML representer"
    assert dump_blocks(unusual) == expected_unusual
    assert len(left_to_pyyaml) == 1, "a value with a space or a line break is left to PyYAML"


class Colour(enum.StrEnum):
    RED = "red"


class Count(enum.IntEnum):
    ONE = 1


@pytest.mark.parametrize(
    "document",
    [{"k": Colour.RED}, {"k": Count.ONE}, collections.OrderedDict(k="v"), {"k": collections.OrderedDict(a="b")}],
)
def test_what_pyyaml_refuses_is_still_refused(document: Any) -> None:
    """Subclasses of str, int or dict are not written by the block writer: PyYAML's safe dumper
    refuses them, as it did before the block writer."""
    with pytest.raises(yaml.representer.RepresenterError):
        dump_blocks([document])


SIMPLE_CHARACTERS = "abcXYZ0123456789_./:+-eE"


@pytest.mark.parametrize("seed", range(4))
def test_ids_hashes_times_and_numbers_as_text_are_plain_or_quoted_as_pyyaml_writes_them(seed: int) -> None:
    """The scalars the block writer styles itself, no longer through ``yaml.dump``: each as PyYAML
    writes it alone, in a mapping and in a list."""
    rnd = random.Random(seed)
    made = ["".join(rnd.choice(SIMPLE_CHARACTERS) for _ in range(rnd.randint(1, 12))) for _ in range(3000)] + [
        "0x1F",
        "0o17",
        "0b101",
        "1_000",
        "12:30",
        "190:20:30",
        "1e10",
        "1.5e+3",
        ".5",
        "1.",
        "+1",
        "-1",
        "1:",
        "a:",
        "a::b",
        "fe80::1",
        "http://x.y/z",
        "2026-01-01",
        "2026-12-07T02:18:30.266676+00:00",
        "3f2a9c0",
        "1234567",
        "8d3b1c2e-1f5a-4c1e-9b7e-3d2f1a0b9c8d",
        "1.0.3",
        "0.1.0-main.1",
        "Y",
        "n",
        "ON",
        "Off",
        "NULL",
        "NaN",
        ".nan",
        ".inf",
        "-.inf",
        "1_0.5",
        "0.",
        "00",
        "09",
        "0b2",
    ]
    for text in made:
        assert yaml_text._scalar(text, False) == yaml_text._styled(text), text
        for document in ({"k": text, text: "v"}, {"k": [text, "x"]}):
            assert dump_blocks([document]) == _reference([document]), text


def test_a_release_files_ids_hash_and_time_are_styled_without_pyyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(text: str) -> str:
        raise AssertionError(f"{text!r} went through yaml.dump")

    monkeypatch.setattr(yaml_text, "_styled", refused)
    monkeypatch.setattr(yaml_text, "_styled_cached", refused)
    for text, written in (
        ("8d3b1c2e-1f5a-4c1e-9b7e-3d2f1a0b9c8d", "8d3b1c2e-1f5a-4c1e-9b7e-3d2f1a0b9c8d"),
        ("a1b2c3d4e5f60718293a4b5c6d7e8f9012345678", "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"),
        ("2026-12-07T02:18:30.266676+00:00", "'2026-12-07T02:18:30.266676+00:00'"),
        ("1234567", "'1234567'"),
        ("registry.local/bench/svc03:a1b2c3d4e5f6", "registry.local/bench/svc03:a1b2c3d4e5f6"),
    ):
        assert yaml_text._scalar(text, False) == written


def test_short_scalars_are_remembered_but_not_a_secrets_data() -> None:
    """Keys, names and labels repeat from one manifest to the next and are remembered; the values
    of a Secret's data never are, whatever their length."""
    yaml_text._known_scalar.cache_clear()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "web"},
        "data": {"token": "c2VjcmV0LXZhbHVl", "pin": "MTIzNA=="},
    }
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}}}
    for _ in range(2):
        assert dump_blocks([secret, deployment]) == _reference([secret, deployment])
    remembered = yaml_text._known_scalar.cache_info()
    assert remembered.hits > 0
    assert remembered.currsize == len(
        {
            "apiVersion",
            "apps/v1",
            "kind",
            "Deployment",
            "metadata",
            "name",
            "web",
            "labels",
            "app",
            "data",
            "token",
            "pin",
        }
    )
    for value in ("c2VjcmV0LXZhbHVl", "MTIzNA=="):
        before = yaml_text._known_scalar.cache_info().currsize
        yaml_text._known_scalar(value)  # asked for itself, it would be kept
        assert yaml_text._known_scalar.cache_info().currsize == before + 1, f"{value} was remembered by the Secret"
