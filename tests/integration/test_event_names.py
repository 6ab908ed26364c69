"""A server event may carry a platform's spelling of a standard event (`Purchase`, TikTok's
`CompletePayment`, GA4's `begin_checkout`): it is the canonical event, and deduplicates against
the pixel's copy, which the pixel's source maps the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gateway.config import Config
from tests.conftest import FakePlatform, Gateway, eventually
from tests.integration.test_delivery import config_text, hit, sent_ids

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]


@pytest.mark.parametrize(
    ("pixel_name", "server_name", "canonical"),
    [
        ("Purchase", "Purchase", "purchase"),  # Meta's spelling
        ("Purchase", "CompletePayment", "purchase"),  # TikTok's legacy name
        ("InitiateCheckout", "begin_checkout", "initiate_checkout"),  # GA4's
        ("Lead", "generate_lead", "lead"),
    ],
)
async def test_a_platform_spelling_on_the_server_api_deduplicates_with_the_pixel(
    start_gateway: Start,
    make_config: MakeConfig,
    fake_platform: FakePlatform,
    pixel_name: str,
    server_name: str,
    canonical: str,
) -> None:
    gw = await start_gateway(make_config(config_text(fake_platform.url)))
    await hit(gw, "ord-9", ev=pixel_name)
    server_event = {
        "event_id": "ord-9",
        "event_name": server_name,
        "event_source_url": "https://shop.example/thanks",
        "user": {"email": "jane@example.com", "user_agent": "UA"},
        "custom": {"value": "10", "currency": "EUR"},
    }
    response = await gw.client.post(
        "/v1/events",
        json={"events": [server_event]},
        headers={"Authorization": "Bearer test-api-key-0001"},
    )
    assert await response.json() == {"accepted": 0, "duplicates": 1, "rejected": []}

    async def settled() -> bool:
        rows = await gw.rows("SELECT event_name, status FROM deliveries ORDER BY id")
        return rows == [(canonical, "sent"), (canonical, "duplicate")]

    await eventually(settled)
    await asyncio.sleep(0.2)
    assert sent_ids(fake_platform) == ["ord-9"]  # control: one copy went out, the pixel's


async def test_names_outside_the_table_pass_through(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    gw = await start_gateway(make_config(config_text(fake_platform.url)))
    server_event = {
        "event_id": "o-1",
        "event_name": "PlaceAnOrder",  # order placed, payment separate: not a purchase
        "event_source_url": "https://shop.example/thanks",
        "user": {"email": "jane@example.com", "user_agent": "UA"},
    }
    response = await gw.client.post(
        "/v1/events",
        json={"events": [server_event]},
        headers={"Authorization": "Bearer test-api-key-0001"},
    )
    assert (await response.json())["accepted"] == 1
    assert await gw.rows("SELECT event_name FROM deliveries") == [("PlaceAnOrder",)]
