"""Gantry's events as an AsyncAPI 3.0 document, generated from the pydantic models.

``python -m shared.asyncapi > docs/asyncapi.yaml`` rewrites the committed file; a test keeps the
two equal, so the document never drifts from the code.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from shared.events import EVENT_DATA, Envelope, Topic

PRODUCERS = {
    Topic.HOOK_RECEIVED: "the webhook door (gateway or versioning) as it answers the hook, without an outbox",
    Topic.SERVICE_CREATED: "catalog through its outbox",
    Topic.PIPELINE_SUCCEEDED: "versioning through its outbox",
    Topic.VERSION_CREATED: "versioning through its outbox",
    Topic.VERSION_RELEASED: "release through its outbox",
    Topic.DEPLOY_REQUESTED: "deploy through its outbox",
    Topic.DEPLOY_STATUS: "deploy through its outbox",
    Topic.ROUTE_CHANGED: "gateway through its outbox",
    Topic.SERVICE_CHANGED: "catalog through its outbox",
    Topic.PROJECT_CHANGED: "catalog through its outbox",
    Topic.ENVIRONMENT_CHANGED: "release through its outbox",
    Topic.RELEASE_WITHDRAWN: "release through its outbox",
    Topic.RESOURCE_CHANGED: "deploy through its outbox",
    Topic.AUDIT_RECORDED: "every service for each write request to its API, through its outbox",
}

KEYS = {
    Topic.HOOK_RECEIVED: "the GitLab project id",
    Topic.ROUTE_CHANGED: "the route name",
    Topic.PROJECT_CHANGED: "the project code",
    Topic.ENVIRONMENT_CHANGED: "the environment code",
    Topic.RESOURCE_CHANGED: "<environment>/<resource name>",
    Topic.AUDIT_RECORDED: "the target: <project>/<service>, else the project, environment or action",
}


def _message_name(topic: Topic) -> str:
    return EVENT_DATA[topic].__name__


def build_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {"Envelope": Envelope.model_json_schema(ref_template="#/components/schemas/{model}")}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in Topic:
        model = EVENT_DATA[topic]
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        name = _message_name(topic)
        channel_id = topic.value.replace(".", "_")
        channels[channel_id] = {
            "address": topic.value,
            "description": f"Key: {KEYS.get(topic, 'the service id')}. Poison records go to {topic.dlq}.",
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"publish_{channel_id}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"published by {PRODUCERS[topic]}",
        }
    messages = {
        _message_name(topic): {
            "name": topic.value,
            "contentType": "application/json",
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/Envelope"},
                    {
                        "properties": {
                            "type": {"const": topic.value},
                            "data": {"$ref": f"#/components/schemas/{_message_name(topic)}"},
                        }
                    },
                ]
            },
        }
        for topic in Topic
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Gantry events",
            "version": "0.1.0",
            "description": "Every event is one JSON envelope (CloudEvents 1.0 fields plus correlation_id and "
            "causation_id); the topic is the event type.",
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> str:
    return yaml.safe_dump(build_document(), sort_keys=True, allow_unicode=True)


if __name__ == "__main__":
    sys.stdout.write(render())
