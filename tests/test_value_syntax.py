"""The value syntax of --set and --model-arg (issue 22, item 7): a,b / (a,b) / [a,b] sequences, typed items, and
one-line errors that show the accepted forms."""
from __future__ import annotations

import inspect

import pytest

from harness.core.errors import UsageError
from harness.core.registry import ATTACKS, DEFENSES, RECIPES, Param, Registry
from harness.core.values import parse_literal, parse_number, split_sequence


def _param(name, annotation, default):
    return Param(name, annotation, default)


@pytest.mark.parametrize("text", ["0.5,1.0", "(0.5,1.0)", "[0.5,1.0]", " ( 0.5 , 1.0 ) ", "(0.5, 1.0,)", "1/2,1"])
def test_float_sequences_in_every_form(text):
    p = _param("sweep", tuple[float, ...], (0.25, 0.5))
    value = p.parse(text)
    assert value == (0.5, 1.0) and type(value) is tuple and all(type(v) is float for v in value)


def test_registered_sweep_parses_all_three_forms():
    from harness.plugins import load_builtins

    load_builtins()
    sweep = ATTACKS.get("adaptive_l2").params["sweep"]
    assert sweep.parse("(0.5,1.0)") == sweep.parse("[0.5,1.0]") == sweep.parse("0.5,1.0") == (0.5, 1.0)
    assert sweep.parse("0.5") == (0.5,)
    # ints stay ints where the default says so (bare `tuple` annotations with int defaults)
    milestones = RECIPES.get("crown-ibp").params["milestones"]
    assert milestones.parse("(20,30)") == (20, 30) and all(type(v) is int for v in milestones.parse("[20,30]"))
    assert DEFENSES.get("a5_co").params["co_milestones"].parse("10") == (10,)


def test_item_types_follow_the_annotation():
    assert _param("m", tuple[int, ...], ()).parse("[1, 2, 3]") == (1, 2, 3)
    assert _param("m", tuple, (30,)).parse("30,40") == (30, 40)
    assert _param("m", tuple, (0.0,)).parse("1,2") == (1.0, 2.0)
    assert all(type(v) is float for v in _param("m", tuple, (0.0,)).parse("1,2"))
    assert _param("m", tuple[int, float], (1, 0.5)).parse("(2, 8/255)") == (2, 8 / 255)
    assert _param("m", list[str], []).parse("[a, b]") == ["a", "b"]
    assert _param("m", tuple[float, ...] | None, None).parse("none") is None
    assert _param("m", tuple[float, ...], ()).parse("()") == ()
    from collections.abc import Sequence

    assert _param("m", Sequence[float], (0.5,)).parse("[1, 2]") == (1.0, 2.0)


@pytest.mark.parametrize("text, reason", [
    ("0.1,,0.2", "item 2 is empty"),
    (",0.1", "item 1 is empty"),
    ("(0.5,1.0]", "'(' is not closed by ')'"),
    ("((0.5,1.0))", "brackets inside a sequence are not accepted"),
    ("0.5,abc", "item 2 'abc' is not a number such as 0.5 or 8/255"),
])
def test_bad_float_sequences_show_the_forms(text, reason):
    p = _param("sweep", tuple[float, ...], (0.25,))
    with pytest.raises(UsageError) as err:
        p.parse(text)
    msg = str(err.value)
    assert msg == f"sweep expects a sequence of numbers: a,b or (a,b) or [a,b]; got {text!r} ({reason})"


def test_bad_int_sequences_name_integers():
    with pytest.raises(UsageError, match=r"^milestones expects a sequence of integers: a,b or \(a,b\) or \[a,b\]; "
                                         r"got '30,40.5' \(item 2 '40.5' is not an integer\)$"):
        _param("milestones", tuple, (30,)).parse("30,40.5")
    with pytest.raises(UsageError, match=r"2 items where 3 are needed"):
        _param("size", tuple[int, int, int], (1, 2, 3)).parse("1,2")


def test_scalar_errors_say_what_is_expected():
    with pytest.raises(UsageError, match=r"^rate expects a number such as 0.5 or 8/255, got 'fast'$"):
        _param("rate", float, 0.1).parse("fast")
    with pytest.raises(UsageError, match=r"^rate expects a number such as 0.5 or 8/255, got '1/0'$"):
        _param("rate", float, 0.1).parse("1/0")
    with pytest.raises(UsageError, match=r"^steps expects an integer, got '2.5'$"):
        _param("steps", int, 10).parse("2.5")
    with pytest.raises(UsageError, match=r"^flag expects true or false, got 'maybe'$"):
        _param("flag", bool, False).parse("maybe")


def test_untyped_parameters_take_the_default_type():
    reg = Registry("things")

    @reg.register("thing")
    def thing(sizes=(1, 2), rate=0.5, name="x"):  # no annotations
        return sizes, rate, name

    params = reg.get("thing").params
    assert params["sizes"].parse("[3,4]") == (3, 4)
    assert params["rate"].parse("8/255") == 8 / 255
    assert params["name"].parse("(y)") == "(y)"  # a string parameter keeps its text
    assert inspect.signature(thing).parameters["sizes"].annotation is inspect.Parameter.empty


def test_split_sequence_and_literals():
    assert split_sequence("[1, 2]") == (["1", "2"], "[")
    assert split_sequence("") == ([], "")
    assert parse_number(" 8/255 ") == 8 / 255
    assert parse_literal("3") == 3 and type(parse_literal("3")) is int
    assert parse_literal("8/255") == 8 / 255 and parse_literal("1e-3") == 0.001
    assert parse_literal("true") is True and parse_literal("False") is False and parse_literal("none") is None
    assert parse_literal("a,b,c") == ("a", "b", "c")
    assert parse_literal("(1,2.5)") == (1, 2.5) and parse_literal("[1,2]") == [1, 2]
    assert parse_literal("'1'") == "1" and parse_literal('"a,b"') == "a,b"
    assert parse_literal("resnet18") == "resnet18" and parse_literal("1/2/3") == "1/2/3"
    with pytest.raises(ValueError, match="item 2 is empty"):
        parse_literal("1,,2")
