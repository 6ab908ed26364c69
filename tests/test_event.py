"""`evolve`: the hit path's copy of a record makes what `dataclasses.replace` makes."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import event as event_module
from gateway.event import Consent, ConsentState, Content, Custom, Event, MetaExtras, User, evolve

RECORDS = [
    cls
    for cls in vars(event_module).values()
    if isinstance(cls, type) and dataclasses.is_dataclass(cls)
]


def test_every_record_is_frozen_slotted_and_built_by_init_alone() -> None:
    # What `evolve` relies on: no __post_init__ to run, no init=False field to compute.
    assert len(RECORDS) >= 9
    for cls in RECORDS:
        assert "__slots__" in vars(cls), cls
        assert cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]
        assert not hasattr(cls, "__post_init__"), cls
        assert all(f.init for f in dataclasses.fields(cls)), cls


EVENT = Event(
    event_id="e-1",
    event_name="purchase",
    event_time=1_795_000_000,
    source="meta_pixel",
    user=User(email="jane@example.com", client_ip="203.0.113.7", ids={"fbp": "fb.1.1.2"}),
    custom=Custom(value=Decimal("19.90"), currency="EUR", contents=(Content(id="264"),)),
    consent=Consent(ad_storage=ConsentState.GRANTED, basis={"ad_storage": "server"}),
    meta=MetaExtras(pixel_id="123"),
)


@given(
    name=st.sampled_from([f.name for f in dataclasses.fields(Event)]),
    value=st.one_of(st.none(), st.text(max_size=8), st.integers(), st.booleans()),
)
def test_evolve_is_replace(name: str, value: object) -> None:
    evolved = evolve(EVENT, **{name: value})
    assert evolved == dataclasses.replace(EVENT, **{name: value})  # type: ignore[arg-type]
    assert type(evolved) is Event
    assert evolved is not EVENT
    assert EVENT.event_id == "e-1"
    assert EVENT.user.client_ip == "203.0.113.7"


def test_evolve_copies_nested_records_and_keeps_the_rest() -> None:
    evolved = evolve(EVENT, user=evolve(EVENT.user, client_ip=None, user_agent=None), limited=True)
    assert evolved.user.client_ip is None
    assert evolved.user.email == "jane@example.com"
    assert evolved.limited
    assert not EVENT.limited
    assert evolved.custom is EVENT.custom
    assert evolved.meta is EVENT.meta
    with pytest.raises(dataclasses.FrozenInstanceError):
        evolved.event_id = "x"  # type: ignore[misc]


def test_evolve_refuses_a_field_the_record_has_not() -> None:
    with pytest.raises(TypeError, match="Event has no field colour"):
        evolve(EVENT, colour="blue")
    with pytest.raises(TypeError, match="User has no field event_id"):
        evolve(EVENT.user, event_id="x")
