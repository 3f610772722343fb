"""GitLab's Pipeline Hook as Gantry reads it: the wire contract shared by the front door (which
checks and queues hooks) and versioning (which applies them).

Everything that enters here is bounded: the body's size (while it is read, see ``shared.limits``),
its nesting depth, and every free-text field Gantry keeps (trimmed with a marker), so a queued hook
and every event made from it fit the broker's message limit by construction.

Hooks from every GitLab in use are read alike: times as ``2016-08-12 15:23:28 UTC`` or ISO 8601,
the jobs under ``builds`` (older senders: ``jobs``), and keys Gantry does not read (``merge_request``,
``source_pipeline``, ``variables``, …) ignored.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from shared.errors import BadRequest, InvalidInput, TooLarge

PIPELINE_HOOK = "Pipeline Hook"
MAX_DEPTH = 32  # GitLab's hooks nest about 5 deep
MAX_TEXT = 16_384  # characters kept of a commit message; GitLab's own commit titles are far shorter
MAX_NAME = 255
MAX_STAGES = 100
MAX_JOBS = 5_000  # every attempt of every job; GitLab caps a pipeline's jobs far lower on most plans
TRIM_MARKER = "… [trimmed by Gantry: {} more characters]"
# Parts of a hook Gantry does not read, dropped (and named) when the hook would not fit otherwise.
UNREAD_BULK = ("merge_request", "source_pipeline", "user")
JOB_KEYS = ("builds", "jobs")  # GitLab's name, and older senders'
# What Gantry reads of a job: the rest (runner, user, artifacts, …) goes first when space is short.
JOB_FIELDS = (
    "id",
    "stage",
    "name",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "allow_failure",
    "when",
    "manual",
)
TIME_FORMATS = ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S")


def trim(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    marker = TRIM_MARKER.format(len(text) - limit)
    return text[: max(0, limit - len(marker))] + marker


def parse_time(value: object) -> datetime | None:
    """A GitLab time, as any GitLab sends it: ``2016-08-12 15:23:28 UTC`` (webhooks), ISO 8601
    (``2016-08-12T15:23:28Z``, ``…T15:23:28.123+02:00``: older senders, the API). Missing or
    unreadable is ``None``: a time is shown, never decided on."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    text = value.strip().replace(" UTC", " +0000")
    parsed: datetime | None
    try:  # every format GitLab sends: 0.3 µs, where ``strptime`` takes 9 (a hook has 2 + 3 a job)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = _strptime(text)  # what ISO 8601 does not spell: ``2016-8-12 5:23:28 UTC``
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _strptime(text: str) -> datetime | None:
    for fmt in TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


GitLabTime = Annotated[datetime | None, BeforeValidator(parse_time)]


def _name(value: object) -> object:
    return trim(value, MAX_NAME) if isinstance(value, str) else value


Name = Annotated[str, BeforeValidator(_name)]
Flag = Annotated[bool, BeforeValidator(lambda value: False if value is None else value)]  # null: not set


class HookJob(BaseModel):
    """One attempt of one job (``builds[]``): a retried job appears once per attempt, the
    highest id being the latest."""

    model_config = ConfigDict(extra="ignore")
    id: int = Field(ge=1, le=2**63 - 1)
    stage: Name = ""
    name: Name
    status: str = Field(max_length=32)
    created_at: GitLabTime = None
    started_at: GitLabTime = None
    finished_at: GitLabTime = None
    allow_failure: Flag = False
    when: str | None = Field(default=None, max_length=32)
    manual: Flag = False

    @property
    def job_id(self) -> int:
        return self.id


class HookAttributes(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: int = Field(ge=1, le=2**63 - 1)
    ref: str = Field(min_length=1, max_length=MAX_NAME)
    tag: bool = False
    sha: str = Field(min_length=1, max_length=64)
    status: str = Field(max_length=32)
    url: str | None = Field(default=None, max_length=2048)
    stages: list[str] = Field(default_factory=list)
    created_at: GitLabTime = None
    finished_at: GitLabTime = None

    @field_validator("stages")
    @classmethod
    def _bound_stages(cls, stages: list[str]) -> list[str]:
        return [trim(stage, MAX_NAME) for stage in stages[:MAX_STAGES]]


class HookProject(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: int | str = Field(union_mode="left_to_right")
    path_with_namespace: str = Field(min_length=1, max_length=MAX_NAME)

    @field_validator("id")
    @classmethod
    def _bound_id(cls, value: int | str) -> int | str:
        if isinstance(value, str) and not 1 <= len(value) <= MAX_NAME:
            raise ValueError(f"must be 1 to {MAX_NAME} characters")
        return value


class HookCommit(BaseModel):
    model_config = ConfigDict(extra="ignore")
    message: str = ""
    author: dict[str, Any] = Field(default_factory=dict)

    @field_validator("message")
    @classmethod
    def _bound_message(cls, message: str) -> str:
        return trim(message, MAX_TEXT)

    @property
    def author_name(self) -> str:
        return trim(str(self.author.get("name", "")), MAX_NAME)


class PipelineHook(BaseModel):
    model_config = ConfigDict(extra="ignore")
    object_kind: str = Field(max_length=64)
    object_attributes: HookAttributes
    project: HookProject
    commit: HookCommit | None = None
    jobs: list[HookJob] = Field(
        default_factory=list, max_length=MAX_JOBS, validation_alias=AliasChoices("builds", "jobs")
    )

    @property
    def scm_project_id(self) -> str:
        return str(self.project.id)


def read_json(raw: bytes) -> Any:
    """The body as JSON, refusing (400) what is not JSON or nests deeper than ``MAX_DEPTH``."""
    try:
        document = json.loads(raw)
    except RecursionError as exc:
        raise BadRequest(f"the hook body nests deeper than {MAX_DEPTH} levels") from exc
    except ValueError as exc:
        raise BadRequest(f"the hook body is not JSON: {exc}") from exc
    if depth(document) > MAX_DEPTH:
        raise BadRequest(f"the hook body nests deeper than {MAX_DEPTH} levels")
    return document


def depth(document: Any) -> int:
    """How deeply lists and objects nest in ``document`` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level <= MAX_DEPTH:  # past the limit the answer is known: stop looking
            stack.extend((child, level + 1) for child in children)
    return deepest


def project_id_of(document: Any) -> str:
    """The GitLab project id a hook carries: what its token is derived from."""
    project = document.get("project") if isinstance(document, dict) else None
    project_id = project.get("id") if isinstance(project, dict) else None
    if isinstance(project_id, bool) or not isinstance(project_id, int | str) or not str(project_id):
        raise InvalidInput("the hook carries no project.id: only GitLab's Pipeline Hooks are read")
    if len(str(project_id)) > MAX_NAME:
        raise InvalidInput(f"the hook's project.id is longer than {MAX_NAME} characters")
    return str(project_id)


def parse_pipeline_hook(body: Any) -> PipelineHook:
    try:
        hook = PipelineHook.model_validate(body)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        raise InvalidInput(f"not a GitLab Pipeline Hook body: missing or invalid {fields}") from exc
    if hook.object_kind != "pipeline":
        raise InvalidInput(f"object_kind is {hook.object_kind!r}; only 'pipeline' hooks are read")
    return hook


# How much larger than its body a hook's JSON can get when written again: a number like ``1e15``
# (4 bytes) is written ``1000000000000000.0`` (18); a separator gains a space; escapes only shrink.
MAX_REWRITTEN = 5


def bounded(document: dict[str, Any], limit: int, *, body: bytes | None = None) -> dict[str, Any]:
    """The hook as received, with its free text trimmed and, when it still takes more than
    ``limit`` bytes as JSON, the parts Gantry does not read dropped (listed under ``_gantry_dropped``).
    Raises ``TooLarge`` when even that does not fit, ``BadRequest`` for text that is not Unicode.

    Given the ``body`` the document was read from, a body so small that even written five times
    larger it fits, and with no ``\\u`` escape of a surrogate (the only way JSON read from UTF-8
    holds text that is not Unicode), is not written out to be measured: almost every hook (a
    500-byte hook takes 2.6 µs instead of 8.4; the cost of writing one out grows with its size)."""
    document = dict(document)
    commit = document.get("commit")
    if isinstance(commit, dict):
        document["commit"] = {
            **commit,
            **{
                name: trim(commit[name], MAX_TEXT) for name in ("message", "title") if isinstance(commit.get(name), str)
            },
        }
    attributes = document.get("object_attributes")
    if isinstance(attributes, dict) and isinstance(attributes.get("name"), str):
        document["object_attributes"] = {**attributes, "name": trim(attributes["name"], MAX_NAME)}
    if body is not None and len(body) * MAX_REWRITTEN <= limit and b"\\ud" not in body and b"\\uD" not in body:
        return document
    if _size(document) <= limit:
        return document
    dropped = [name for name in UNREAD_BULK if document.pop(name, None) is not None]
    document["_gantry_dropped"] = dropped
    for key in JOB_KEYS:  # the jobs are read: first only their unread fields go, then (if need be) all
        if isinstance(document.get(key), list) and _size(document) > limit:
            document[key] = [_slim_job(job) for job in document[key]]
            dropped.append(f"{key}: fields other than {', '.join(JOB_FIELDS)}")
        if document.get(key) is not None and _size(document) > limit:
            del document[key]
            dropped.append(key)
    if _size(document) > limit:
        raise TooLarge(
            f"the hook takes more than {limit} bytes even without the parts Gantry does not read "
            f"({', '.join(dropped) or 'none were there'}): it cannot be queued"
        )
    return document


def _slim_job(job: Any) -> Any:
    return {name: job[name] for name in JOB_FIELDS if name in job} if isinstance(job, dict) else job


def _size(document: dict[str, Any]) -> int:
    try:
        return len(json.dumps(document, ensure_ascii=False).encode())
    except UnicodeEncodeError as exc:  # a lone surrogate ("\\ud800"): valid JSON, not valid text
        raise BadRequest(f"the hook body holds text that is not valid Unicode: {exc.reason}") from exc
