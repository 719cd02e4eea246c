"""``Registry``: built-in specs resolve lazily, registered objects and unregistered
``module:attr`` specs resolve, and a bad name's error names the config key and the choices."""

import os.path

import pytest

from rlhf_dist.utils.imports import Registry


def test_builtin_spec_registered_object_and_user_spec_resolve():
    registry = Registry("rollout.backend", {"join": "os.path:join"})

    @registry.register("mine")
    class Mine:
        pass

    assert registry.get("join") is os.path.join
    assert registry.get("mine") is Mine
    assert registry.get("os.path:basename") is os.path.basename
    assert registry.names() == ["join", "mine"]
    registry.unregister("mine")
    assert registry.names() == ["join"]


def test_unknown_name_and_bad_spec_name_the_field():
    registry = Registry("env.name", {"calc": "os.path:join"})
    with pytest.raises(
        KeyError,
        match=r"env.name: got 'calculator', expected one of "
        r"\['calc'\] or package.module:Class",
    ):
        registry.check("calculator", KeyError)
    with pytest.raises(
        ValueError, match="env.name 'os.path:nope': module 'os.path' has no attribute 'nope'"
    ):
        registry.get("os.path:nope")
    with pytest.raises(ValueError, match="env.name 'no_such_pkg:X': cannot import"):
        registry.get("no_such_pkg:X")
