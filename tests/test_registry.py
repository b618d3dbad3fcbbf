"""Registry: lookup errors list the valid names, bind/build check keywords before any compute."""

import pytest

from rlvr.registry import Registry


def make():
    reg = Registry("widget")

    @reg.register("alpha")
    def alpha(x, *, scale=1.0):
        return x * scale

    @reg.register()
    def beta(x):
        return -x

    return reg


def test_lookup_and_names():
    reg = make()
    assert reg.names() == ["alpha", "beta"]
    assert reg.lookup("beta")(2) == -2
    with pytest.raises(ValueError, match=r"unknown widget 'alpah'.*did you mean 'alpha'.*\['alpha', 'beta'\]"):
        reg.lookup("alpah")


def test_bind_checks_keywords():
    reg = make()
    assert reg.bind("alpha", scale=3.0)(2) == 6.0
    with pytest.raises(ValueError, match=r"widget 'alpha' has no option 'scal'.*did you mean 'scale'"):
        reg.bind("alpha", scal=3.0)


def test_double_registration_fails():
    reg = make()
    with pytest.raises(ValueError, match="twice"):
        reg.register("alpha")(lambda x: x)


def test_needs_are_declared_not_read_from_signatures():
    reg = Registry("widget")

    @reg.register("plain")
    def plain(x, *, lengths=None):  # takes `lengths` but did not declare it: the loop will not pass it
        return x

    @reg.register("declared", needs=("lengths",))
    def declared(x, *, lengths):
        return x

    class Seeded:
        needs = ("seed", "holdout")

    reg.register("seeded")(Seeded)
    assert reg.needs("plain") == () and reg.needs("declared") == ("lengths",)
    assert reg.needs("seeded") == ("seed", "holdout")
    with pytest.raises(ValueError, match="unknown widget"):
        reg.needs("nope")
