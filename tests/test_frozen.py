"""`fast_init`: a record's `__init__` builds what the dataclass's own `__init__` builds."""

from __future__ import annotations

import dataclasses
import inspect
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import event as event_module
from gateway.frozen import fast_init
from gateway.outbox import records as outbox_records
from gateway.sources import base as sources_base

FAST = list(
    dict.fromkeys(
        cls
        for module in (event_module, sources_base, outbox_records)
        for cls in vars(module).values()
        if isinstance(cls, type)
        and dataclasses.is_dataclass(cls)
        and hasattr(cls.__init__, "__wrapped__")
    )
)


def slots(record: object) -> list[Any]:
    return [getattr(record, f.name) for f in dataclasses.fields(record)]  # type: ignore[arg-type]


def by_dataclass(cls: type, *args: Any, **kwargs: Any) -> object:
    made = object.__new__(cls)
    cls.__init__.__wrapped__(made, *args, **kwargs)  # type: ignore[misc]
    return made


def test_the_hit_path_records_have_it() -> None:
    names = {cls.__name__ for cls in FAST}
    assert {"Event", "User", "Custom", "Consent", "RawHit", "MetaExtras"} <= names
    assert {"Hit", "Parsed", "NewEvent", "NewDelivery", "NewTouch", "Added"} <= names


@pytest.mark.parametrize("cls", FAST, ids=lambda c: c.__name__)
def test_same_signature(cls: type) -> None:
    assert inspect.signature(cls.__init__) == inspect.signature(cls.__init__.__wrapped__)  # type: ignore[misc]


@pytest.mark.parametrize("cls", FAST, ids=lambda c: c.__name__)
@given(data=st.data())
def test_same_record_from_any_arguments(cls: type, data: st.DataObject) -> None:
    # Values of any type: the generated __init__ checks nothing the dataclass's does not.
    fields = dataclasses.fields(cls)
    values = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.just(object()))
    given_fields = data.draw(st.lists(st.sampled_from(fields), unique=True))
    required = [f for f in fields if f.default is f.default_factory is dataclasses.MISSING]
    required += [f for f in fields if f.default_factory is time.time]  # two clocks differ
    kwargs = {f.name: data.draw(values) for f in {*required, *given_fields}}
    positional = data.draw(st.integers(0, len(fields)))
    args = []
    for f in fields[:positional]:  # the first fields by position, up to one not given
        if f.name not in kwargs:
            break
        args.append(kwargs.pop(f.name))
    made = cls(*args, **kwargs)
    assert slots(made) == slots(by_dataclass(cls, *args, **kwargs))


def test_factories_called_for_each_record() -> None:
    a, b = (
        event_module.Event("e", "page_view", 1, "s"),
        event_module.Event("e", "page_view", 1, "s"),
    )
    assert a.user is not b.user
    assert a.consent_signals is not b.consent_signals
    assert a.user == event_module.User()
    assert a.received_at > 0


def test_still_frozen() -> None:
    user = event_module.User(email="a@example.com")
    with pytest.raises(dataclasses.FrozenInstanceError):
        user.email = "b@example.com"  # type: ignore[misc]


@pytest.mark.parametrize(
    "call",
    [
        lambda: event_module.Event("e", "page_view", 1),  # a required field missing
        lambda: event_module.User(emails="a@example.com"),  # type: ignore[call-arg]
        lambda: event_module.Content(*range(len(dataclasses.fields(event_module.Content)) + 1)),
        lambda: event_module.User(None, email="a@example.com"),  # type: ignore[misc]
    ],
)
def test_same_errors_for_wrong_arguments(call: Any) -> None:
    with pytest.raises(TypeError):
        call()


def test_refuses_what_it_cannot_build() -> None:
    @dataclasses.dataclass(slots=True)
    class Mutable:
        a: int

    @dataclasses.dataclass(frozen=True)
    class Unslotted:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Computed:
        a: int
        b: int = dataclasses.field(init=False, default=0)

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            pass

    for cls in (Mutable, Unslotted, Computed, Checked):
        with pytest.raises(TypeError):
            fast_init(cls)
