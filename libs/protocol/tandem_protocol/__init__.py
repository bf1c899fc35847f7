"""Tandem's wire protocol, shared by the tracker's HTTP API, the bus and the agents' sockets."""

from tandem_protocol import subjects
from tandem_protocol.codec import decode, encode
from tandem_protocol.errors import ErrorBody, ErrorPayload, ProtocolError
from tandem_protocol.models import (
    PROTOCOL_VERSION,
    AgentMessage,
    EventBatch,
    IngestBatchRequest,
    IngestBatchResponse,
    LiveSession,
    LoginRequest,
    LoginResponse,
    Project,
    RrwebEvent,
    SnapshotPointer,
    StartRequest,
    StartResponse,
)

__all__ = [
    "PROTOCOL_VERSION",
    "AgentMessage",
    "ErrorBody",
    "ErrorPayload",
    "EventBatch",
    "IngestBatchRequest",
    "IngestBatchResponse",
    "LiveSession",
    "LoginRequest",
    "LoginResponse",
    "Project",
    "ProtocolError",
    "RrwebEvent",
    "SnapshotPointer",
    "StartRequest",
    "StartResponse",
    "decode",
    "encode",
    "subjects",
]
