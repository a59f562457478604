"""The database schema (SQLAlchemy Core). Migrations in ``migrations/versions`` create it.

Timestamps are stored as Unix epoch seconds (floats): portable between SQLite and PostgreSQL,
exact, and what the AWS JSON protocol puts on the wire.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

server_settings = Table(
    "server_settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("user_id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("path", String(512), nullable=False, default="/", server_default="/"),
    Column("tags", JSON, nullable=False, default=dict, server_default="{}"),
    # Console password (tokens.hash_secret); NULL: the user has no login profile.
    Column("password_hash", Text),
    Column("password_last_used_at", Float),
)

access_keys = Table(
    "access_keys",
    metadata,
    Column("access_key_id", String(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.user_id"), nullable=False),
    Column("secret_encrypted", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
)

# ---- IAM: groups, managed and inline policies, attachments ---------------------------------

iam_groups = Table(
    "iam_groups",
    metadata,
    Column("group_id", String(32), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("path", String(512), nullable=False, default="/"),
    Column("created_at", Float, nullable=False),
)

group_members = Table(
    "group_members",
    metadata,
    Column("group_id", String(32), ForeignKey("iam_groups.group_id"), nullable=False),
    Column("user_id", String(32), ForeignKey("users.user_id"), nullable=False, index=True),
    PrimaryKeyConstraint("group_id", "user_id"),
)

# Managed policies, built-in (``builtin``: read-only, ARN in the ``aws`` account) and the
# installation's own. ``next_version`` numbers versions: IAM never reuses a version id.
policies = Table(
    "policies",
    metadata,
    Column("policy_id", String(32), primary_key=True),
    Column("arn", String(1024), nullable=False, unique=True),
    Column("name", String(128), nullable=False),
    Column("path", String(512), nullable=False, default="/"),
    Column("description", Text, nullable=False, default=""),
    Column("default_version_id", String(16), nullable=False),
    Column("next_version", Integer, nullable=False),
    Column("builtin", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

policy_versions = Table(
    "policy_versions",
    metadata,
    Column("policy_id", String(32), ForeignKey("policies.policy_id"), nullable=False),
    Column("version_id", String(16), nullable=False),
    Column("document", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("policy_id", "version_id"),
)

user_policy_attachments = Table(
    "user_policy_attachments",
    metadata,
    Column("user_id", String(32), ForeignKey("users.user_id"), nullable=False),
    Column("policy_id", String(32), ForeignKey("policies.policy_id"), nullable=False, index=True),
    PrimaryKeyConstraint("user_id", "policy_id"),
)

group_policy_attachments = Table(
    "group_policy_attachments",
    metadata,
    Column("group_id", String(32), ForeignKey("iam_groups.group_id"), nullable=False),
    Column("policy_id", String(32), ForeignKey("policies.policy_id"), nullable=False, index=True),
    PrimaryKeyConstraint("group_id", "policy_id"),
)

user_inline_policies = Table(
    "user_inline_policies",
    metadata,
    Column("user_id", String(32), ForeignKey("users.user_id"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("document", Text, nullable=False),
    PrimaryKeyConstraint("user_id", "name"),
)

group_inline_policies = Table(
    "group_inline_policies",
    metadata,
    Column("group_id", String(32), ForeignKey("iam_groups.group_id"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("document", Text, nullable=False),
    PrimaryKeyConstraint("group_id", "name"),
)

# One row (``row_id`` 1): bumped by every change to identities, policies and node tags, in the
# change's own transaction, and taken first there, so that such changes take turns (see
# ``store.identity``); servers poll it to re-check live sessions.
iam_generation = Table(
    "iam_generation",
    metadata,
    Column("row_id", Integer, primary_key=True, autoincrement=False),
    Column("generation", Integer, nullable=False),
)

activations = Table(
    "activations",
    metadata,
    Column("activation_id", String(36), primary_key=True),
    Column("code_hash", Text, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("default_instance_name", String(256), nullable=False, default=""),
    Column("iam_role", String(256), nullable=False, default=""),
    Column("registration_limit", Integer, nullable=False),
    Column("registrations_count", Integer, nullable=False, default=0),
    Column("expiration_date", Float, nullable=False),
    Column("created_date", Float, nullable=False),
    Column("tags", JSON, nullable=False),
    # Wrong codes given for this activation; at ``ServerSettings.activation_lock_after`` it is
    # locked (``locked_at`` set) and refuses every code, the right one too.
    Column("failed_attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("locked_at", Float),
    # DescribeActivations pages along it (keyset, ``ActivationRepository.page``).
    Index("ix_activations_listing", "created_date", "activation_id"),
)

nodes = Table(
    "nodes",
    metadata,
    Column("instance_id", String(20), primary_key=True),
    Column("activation_id", String(36), nullable=False),
    Column("public_key", Text, nullable=False),
    Column("public_key_type", String(16), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("name", String(256), nullable=False, default=""),
    Column("computer_name", String(256), nullable=False, default=""),
    Column("platform_type", String(32), nullable=False, default=""),
    Column("platform_name", String(256), nullable=False, default=""),
    Column("platform_version", String(64), nullable=False, default=""),
    Column("ip_address", String(64), nullable=False, default=""),
    Column("agent_version", String(32), nullable=False, default=""),
    Column("registration_date", Float, nullable=False),
    Column("last_ping_at", Float),
    Column("connected", Boolean, nullable=False, default=False),
    Column("tags", JSON, nullable=False),
    # The highest agent generation that connected (docs/protocol.md §10.3): an agent started
    # later on the same state directory has a higher one and wins; a lower one is refused.
    Column("agent_generation", Integer, nullable=False, default=0, server_default="0"),
    # Scale-out: the replica holding the node's control channel ("" when none or one server).
    Column("replica", String(64), nullable=False, default="", server_default="", index=True),
    # DescribeInstanceInformation pages along it (keyset, ``NodeRepository.page``).
    Index("ix_nodes_listing", "registration_date", "instance_id"),
)

documents = Table(
    "documents",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("document_type", String(32), nullable=False),
    Column("document_format", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("owner", String(64), nullable=False),
    Column("created_date", Float, nullable=False),
    # ``content`` and ``document_format`` above are the default version's (what sessions run).
    Column("default_version", Integer, nullable=False, default=1, server_default="1"),
    Column("latest_version", Integer, nullable=False, default=1, server_default="1"),
)

# Every version of every document (UpdateDocument adds one; DeleteDocument removes them all).
document_versions = Table(
    "document_versions",
    metadata,
    Column(
        "name",
        String(128),
        ForeignKey("documents.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("document_format", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("created_date", Float, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("session_id", String(96), primary_key=True),
    Column("target", String(20), nullable=False, index=True),
    Column("status", String(16), nullable=False, index=True),
    Column("start_date", Float, nullable=False),
    Column("end_date", Float),
    Column("document_name", String(128), nullable=False),
    Column("owner", String(256), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("details", Text, nullable=False, default=""),
    Column("max_session_duration", String(16), nullable=False, default=""),
    Column("parameters", JSON, nullable=False),
    Column("run_as", String(64), nullable=False, default=""),
    Column("exit_code", Integer),
    Column("bytes_in", Integer, nullable=False, default=0),
    Column("bytes_out", Integer, nullable=False, default=0),
    # The user id of the session's owner ("" for sessions started before issue 6's migration).
    Column("owner_id", String(32), nullable=False, default="", server_default=""),
    # The address StartSession came from: live re-checks evaluate ``aws:SourceIp`` with it.
    Column("source_ip", String(64), nullable=False, default="", server_default=""),
    # The preferences that applied when the session started (``server.preferences``).
    Column("preferences", JSON, nullable=False, default=dict, server_default="{}"),
    # Scale-out: the replica whose gateway relays the session (its timers, recording, counters);
    # "" on a single server. Another replica takes it over when this one is gone.
    Column("relay", String(64), nullable=False, default="", server_default="", index=True),
)

session_tokens = Table(
    "session_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("session_id", String(96), ForeignKey("sessions.session_id"), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    Column("first_used_at", Float),
    Column("revoked", Boolean, nullable=False, default=False),
)

# Agent nonces already used (docs/protocol.md §10.2): a replayed upgrade carries one of these.
# Rows are useless once ``expires_at`` has passed and are deleted from time to time.
used_nonces = Table(
    "used_nonces",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("node_id", String(20), nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)

# TCP connections that port sessions carried, as their agents reported them (docs/protocol.md
# §10.8): one row per connection, at most ``MAX_CONNECTIONS_PER_SESSION`` per session.
session_connections = Table(
    "session_connections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "session_id",
        String(96),
        ForeignKey("sessions.session_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("destination", String(300), nullable=False),
    Column("opened_at", Float, nullable=False),
    Column("closed_at", Float),
    Column("bytes_in", BigInteger, nullable=False, default=0),
    Column("bytes_out", BigInteger, nullable=False, default=0),
    Column("error", String(256), nullable=False, default=""),
)

# ---- event notifications (store/events.py) -------------------------------------------------

# Webhooks: where to post which event types. The secret signs deliveries, so it is kept
# encrypted with the master key (the subscription id as associated data), never hashed.
event_subscriptions = Table(
    "event_subscriptions",
    metadata,
    Column("subscription_id", String(32), primary_key=True),
    Column("url", String(2048), nullable=False),
    Column("event_types", JSON, nullable=False),
    Column("secret_encrypted", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(256), nullable=False, default=""),
)

# Events that some subscription wanted, with the exact body every delivery posts.
event_outbox = Table(
    "event_outbox",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("event_type", String(32), nullable=False),
    Column("time", Float, nullable=False),
    Column("body", Text, nullable=False),
)

# One row per (event, subscription): the outbox's queue and the delivery log. The order of
# ``delivery_id`` is the order of delivery within a subscription.
event_deliveries = Table(
    "event_deliveries",
    metadata,
    Column("delivery_id", Integer, primary_key=True, autoincrement=True),
    Column(
        "subscription_id",
        String(32),
        ForeignKey("event_subscriptions.subscription_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("event_id", String(36), ForeignKey("event_outbox.event_id"), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("next_attempt_at", Float),
    Column("last_attempt_at", Float),
    Column("last_status_code", Integer),
    Column("last_error", String(512), nullable=False, default=""),
    Column("delivered_at", Float),
    Column("lease_until", Float),
    Index("ix_event_deliveries_queue", "status", "subscription_id", "delivery_id"),
    Index("ix_event_deliveries_subscription", "subscription_id", "delivery_id"),
)

# Session recordings (asciicast v2, written by the gateway): one row per recorded session.
# ``location`` is where the finished recording lives (a local path, or ``s3://bucket/key``);
# ``spool_path`` the local file it is written to first (the same path for local storage).
recordings = Table(
    "recordings",
    metadata,
    Column(
        "session_id",
        String(96),
        ForeignKey("sessions.session_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("storage", String(16), nullable=False),
    Column("location", String(1024), nullable=False),
    Column("spool_path", String(1024), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("size", BigInteger, nullable=False, default=0),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("upload_attempts", Integer, nullable=False, default=0),
    Column("last_error", String(512), nullable=False, default=""),
    # Encrypted recordings (envelope encryption): the KMS key's ARN and the data key it wraps.
    Column("kms_key_arn", String(256)),
    Column("wrapped_key", Text),
)

# The key service (KMS's role): keys, whose 32-byte material is stored encrypted under the
# server's master key (``auth.secretbox``, bound to the key id), and their aliases.
kms_keys = Table(
    "kms_keys",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("arn", String(256), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("key_state", String(32), nullable=False),
    Column("key_usage", String(32), nullable=False),
    Column("key_spec", String(32), nullable=False),
    Column("material_encrypted", Text, nullable=False),
    Column("tags", JSON, nullable=False, default=list),
    Column("creation_date", Float, nullable=False),
    Column("deletion_date", Float),
)

kms_aliases = Table(
    "kms_aliases",
    metadata,
    Column("alias_name", String(256), primary_key=True),
    Column(
        "key_id",
        String(36),
        ForeignKey("kms_keys.key_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("creation_date", Float, nullable=False),
    Column("last_updated_date", Float, nullable=False),
)

# ---- the audit trail (docs/design.md "Audit trail") -----------------------------------------

# One row per audit record, in chain order. ``record`` is the canonical JSON that ``hash`` is
# the SHA-256 of (hatchway.audit.chain); the other columns repeat some of its fields for
# LookupEvents' filters and are checked against it by verification. Rows are only inserted.
audit_events = Table(
    "audit_events",
    metadata,
    Column("sequence", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("event_time", Float, nullable=False, index=True),
    Column("event_name", String(128), nullable=False, index=True),
    Column("username", String(128), nullable=False, index=True),
    Column("access_key_id", String(32), nullable=False, index=True),
    Column("read_only", Boolean, nullable=False),
    Column("previous_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("record", Text, nullable=False),
)

# The names of the resources of each record (LookupEvents' ResourceName filter).
audit_event_resources = Table(
    "audit_event_resources",
    metadata,
    Column("sequence", BigInteger, nullable=False),
    Column("name", String(1024), nullable=False, index=True),
    PrimaryKeyConstraint("sequence", "name"),
)

# The chain's head: the last record's sequence and hash (row 1 only). Appending updates it
# first, which takes its row lock (PostgreSQL) or the write lock (SQLite): appends take turns
# across replicas and the chain stays linear. ``first_*``: where the trail starts once old
# records were pruned (the first kept record and the hash it must name), else 1 and zeros.
audit_chain = Table(
    "audit_chain",
    metadata,
    Column("row_id", Integer, primary_key=True, autoincrement=False),
    Column("sequence", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("first_sequence", BigInteger, nullable=False),
    Column("first_previous_hash", String(64), nullable=False),
)

# Live log streams (CloudWatch Logs' role, store.logs): log groups, one stream per session, and
# the stream's events (output text with its ANSI sequences, times in epoch milliseconds).
# ``log_events.group_id`` repeats the stream's group so that group-wide reads and the retention
# job use one index each.
_LOG_ID = BigInteger().with_variant(Integer(), "sqlite")

log_groups = Table(
    "log_groups",
    metadata,
    Column("group_id", _LOG_ID, primary_key=True, autoincrement=True),
    Column("name", String(512), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("retention_days", Integer),
)

log_streams = Table(
    "log_streams",
    metadata,
    Column("stream_id", _LOG_ID, primary_key=True, autoincrement=True),
    Column(
        "group_id",
        _LOG_ID,
        ForeignKey("log_groups.group_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", String(512), nullable=False),
    Column("created_at", Float, nullable=False),
    # Set when the session ended (no more events come).
    Column("ended_at", Float),
    Column("first_event_ms", BigInteger),
    Column("last_event_ms", BigInteger),
    Column("last_ingestion_ms", BigInteger),
    Column("stored_bytes", BigInteger, nullable=False, default=0),
    # Output the server could not store in time (dropped, never waited for).
    Column("dropped_bytes", BigInteger, nullable=False, default=0),
    # The next output frame sequence number expected (resuming after a restart).
    Column("next_sequence", BigInteger),
    Index("ix_log_streams_open", "ended_at"),
    UniqueConstraint("group_id", "name", name="uq_log_streams_group_name"),
)

log_events = Table(
    "log_events",
    metadata,
    Column("event_id", _LOG_ID, primary_key=True, autoincrement=True),
    Column(
        "group_id", _LOG_ID, ForeignKey("log_groups.group_id", ondelete="CASCADE"), nullable=False
    ),
    Column(
        "stream_id",
        _LOG_ID,
        ForeignKey("log_streams.stream_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("timestamp_ms", BigInteger, nullable=False),
    Column("ingestion_ms", BigInteger, nullable=False),
    Column("message", Text, nullable=False),
    Index("ix_log_events_stream", "stream_id", "event_id"),
    Index("ix_log_events_group", "group_id", "event_id"),
    Index("ix_log_events_age", "group_id", "timestamp_ms"),
)

# Console sign-ins (issue 9): one row per signed-in browser. The cookie's token and the CSRF
# token are stored as SHA-256 hashes only (256-bit random values, as data-channel tokens).
console_logins = Table(
    "console_logins",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("csrf_hash", String(64), nullable=False),
    Column("user_id", String(32), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    Column("last_seen_at", Float, nullable=False),
    Column("source_ip", String(64), nullable=False, default=""),
)

# A user's TOTP second factor (RFC 6238): the secret encrypted with the master key; enabled
# once the user proved a code; ``last_step`` the newest time step used (no code twice).
console_mfa = Table(
    "console_mfa",
    metadata,
    Column("user_id", String(32), primary_key=True),
    Column("secret_encrypted", Text, nullable=False),
    Column("enabled", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("last_step", BigInteger, nullable=False, default=0),
)
