"""Recipe fuzzing: any YAML document is either a Recipe or a one-line RecipeError, never a crash.

Three sources of bad input, all bounded: arbitrary YAML values, raw text fragments, and mutations
of the shipped recipes (keys dropped or renamed, values retyped or replaced by random strings).
A sample of the rejected documents then goes through the real CLI: exit 1, one `error:` line,
nothing created in the output directory.
"""

from __future__ import annotations

import string

import pytest
import reliability_figures
import yaml
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerbuild.errors import RecipeError
from layerbuild.model.recipe import FIELDS, Recipe, load_recipe, parse_recipe

SHIPPED = {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted((REPO / "recipes").glob("*.yaml"))}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

# Rejected documents collected across the fuzz tests, replayed through the CLI at the end.
REJECTED: list[str] = []
CLI_SAMPLE = 30

scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=30) | st.sampled_from(["3.12", "3.10", "x86_64", "arm64", "pymysql", "", " ", "~", "AWS_KEY"])
)  # fmt: skip
keys = st.sampled_from(FIELDS) | st.text(max_size=12)
yaml_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)


def check_outcome(data, source="fuzz.yaml") -> str:
    """parse_recipe either returns a Recipe or raises a one-line RecipeError; returns 'ok'|'rejected'."""
    reliability_figures.count("bad_inputs", detail="recipe documents")
    try:
        recipe = parse_recipe(data, source)
    except RecipeError as exc:
        assert_one_line(str(exc), source)
        return "rejected"
    assert isinstance(recipe, Recipe)
    assert recipe.packages and recipe.python and recipe.architectures
    recipe.to_dict()  # the normalised form must always be buildable
    recipe.targets()
    return "ok"


def assert_one_line(message: str, source: str) -> None:
    assert message and "\n" not in message and "\r" not in message, message
    assert "Traceback" not in message
    assert message.startswith(source) or "recipe" in message, message


def load_text(tmp_path, text: str, name="fuzz.yaml") -> str:
    """load_recipe on a file holding text; returns 'ok'|'rejected'."""
    reliability_figures.count("bad_inputs", detail="recipe files")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_recipe(str(path))
    except RecipeError as exc:
        assert_one_line(str(exc), str(path))
        if len(REJECTED) < 500:
            REJECTED.append(text)
        return "rejected"
    return "ok"


@FUZZ
@given(yaml_values)
def test_arbitrary_values_parse_or_fail_in_one_line(data):
    check_outcome(data)


@FUZZ
@given(st.dictionaries(keys, yaml_values, max_size=8))
def test_arbitrary_mappings_round_trip_through_yaml(tmp_path_factory, data):
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return
    load_text(tmp_path_factory.mktemp("fuzz"), text)


fragments = st.lists(
    st.sampled_from(["name: ", "packages:", "\n  - ", "- ", ": ", "{", "}", "[", "]", "&a ", "*a", "!!python/object ",
                     "? ", "'", '"', "\t", "---\n", "...\n", "%YAML 1.1\n", "!!binary ", "2024-13-45", "0x", "1e400",
                     "<<: *a", "!!set {a}", "\n", "python: 3.10", "pymysql", "\x00", "\ufeff", "#"])
    | st.text(max_size=10),
    max_size=20,
).map("".join)


@FUZZ
@given(fragments)
def test_raw_text_fragments_parse_or_fail_in_one_line(tmp_path_factory, text):
    load_text(tmp_path_factory.mktemp("raw"), text)


def mutate(draw, base: dict) -> dict:
    doc = dict(base)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["drop", "rename", "retype", "string", "nest", "add"]))
        key = draw(st.sampled_from(sorted(doc) or list(FIELDS)))
        if op == "drop":
            doc.pop(key, None)
        elif op == "rename":
            value = doc.pop(key, None)
            doc[draw(st.sampled_from([key.upper(), key + "s", key[:-1], key.replace("_", "-"), "package", "arch"]))] = value
        elif op == "retype":
            doc[key] = draw(scalars | st.lists(scalars, max_size=3) | st.dictionaries(st.text(max_size=5), scalars, max_size=2))
        elif op == "string":
            doc[key] = draw(st.text(alphabet=string.printable + "éß\u202e", max_size=80))
        elif op == "nest":
            doc[key] = [doc.get(key)]
        else:
            doc[draw(st.sampled_from(FIELDS))] = draw(yaml_values)
    return doc


@st.composite
def mutated_recipes(draw):
    name = draw(st.sampled_from(sorted(SHIPPED)))
    return mutate(draw, SHIPPED[name])


@FUZZ
@given(mutated_recipes())
def test_mutated_shipped_recipes_parse_or_fail_in_one_line(tmp_path_factory, doc):
    check_outcome(doc)
    load_text(tmp_path_factory.mktemp("mut"), yaml.safe_dump(doc, allow_unicode=True))


def test_shipped_recipes_are_accepted():
    for name, data in SHIPPED.items():
        assert check_outcome(data, f"{name}.yaml") == "ok"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: x\npackages: [six]\ncreated: 2024-13-45\n", "not valid YAML"),  # a timestamp no calendar has
        ("name: x\npackages: [six]\npython: 2024-01-01\n", "python"),
        ("name: x\npackages: [six]\n? [a, b]\n: 1\n", "not valid YAML"),
        ("name: x\npackages: [six]\n1: one\n", "unknown field '1'"),
        ("name: x\npackages: [six]\nbuild_env: {1: a}\n", "build_env"),
        ("\x00", "not valid YAML"),
        ("a: " + "[" * 5000, "not valid YAML"),
    ],
)
def test_known_hard_documents_are_rejected_in_one_line(tmp_path, text, expected):
    path = tmp_path / "hard.yaml"
    path.write_text(text, encoding="utf-8")
    reliability_figures.count("bad_inputs", detail="recipe files")
    with pytest.raises(RecipeError) as info:
        load_recipe(str(path))
    assert_one_line(str(info.value), str(path))
    assert expected in str(info.value)


def test_non_utf8_recipe_file_is_rejected_in_one_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\npackages: [six]\n")
    reliability_figures.count("bad_inputs", detail="recipe files")
    with pytest.raises(RecipeError, match="latin1.yaml: the recipe is not UTF-8 text"):
        load_recipe(str(path))


def test_rejected_documents_fail_the_cli_cleanly(invoke, tmp_path):
    """A bounded sample of the fuzzers' rejects through `layerbuild build`: exit 1, one line, no files."""
    samples = REJECTED[:CLI_SAMPLE] or ["packages: [six]\n"]
    while len(samples) < CLI_SAMPLE:  # run alone: fall back to fixed rejects
        samples.append(f"name: bad{len(samples)}\npackages: {len(samples)}\n")
    for index, text in enumerate(samples):
        recipe = tmp_path / f"r{index}.yaml"
        recipe.write_text(text, encoding="utf-8")
        out = tmp_path / f"out{index}"
        result = invoke("build", recipe, "--out", out)
        reliability_figures.count("bad_inputs", detail="recipes through the CLI")
        assert result.exit_code == 1, (text, result.output)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (text, result.stderr)
        assert result.stdout == ""
        assert not out.exists() or not any(out.iterdir())


def test_empty_python_list_falls_back_to_the_default():
    """Found by fuzzing: `python: []` used to raise IndexError instead of taking the default."""
    recipe = parse_recipe({"name": "x", "packages": ["six"], "python": []}, "x.yaml")
    assert recipe.python == ("3.12",)
