"""The committed AsyncAPI document is the one the event models generate."""

from pathlib import Path

from shared import asyncapi
from shared.events import Topic

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"


def test_document_matches_the_models():
    assert DOCUMENT.read_text() == asyncapi.render(), "regenerate: python -m shared.asyncapi > docs/asyncapi.yaml"


def test_every_topic_has_a_channel_and_a_payload_schema():
    document = asyncapi.build_document()
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {topic.value for topic in Topic}
    assert "deployment_id" in document["components"]["schemas"]["DeployRequested"]["properties"]
