"""Every span attribute and metric name Tollgate emits, in one place.

The ``gen_ai.*`` names follow the OpenTelemetry GenAI semantic conventions
(registry, spans and metrics of open-telemetry/semantic-conventions-genai;
the same strings as ``opentelemetry.semconv._incubating`` 0.66b2). They are
at Development stability, so a rename upstream is absorbed here and nowhere
else. Tollgate's own names carry the ``tollgate.`` prefix.
"""

from __future__ import annotations

# GenAI semantic conventions: span and metric attributes.
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
TOKEN_TYPE_INPUT = "input"
TOKEN_TYPE_OUTPUT = "output"

# General semantic conventions used beside the GenAI ones.
ERROR_TYPE = "error.type"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"

# GenAI semantic conventions: metrics.
GEN_AI_CLIENT_TOKEN_USAGE = "gen_ai.client.token.usage"
GEN_AI_CLIENT_OPERATION_DURATION = "gen_ai.client.operation.duration"

# The boundaries the conventions ask for on gen_ai.client.token.usage
# (powers of four from 1 to 4**13) and gen_ai.client.operation.duration.
TOKEN_USAGE_BUCKETS = tuple(float(4**n) for n in range(14))
OPERATION_DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)

# Tollgate's own span and metric attributes.
TOLLGATE_REQUEST_ID = "tollgate.request_id"
TOLLGATE_IDENTITY = "tollgate.identity"
TOLLGATE_TEAM = "tollgate.team"
TOLLGATE_PROJECT = "tollgate.project"
TOLLGATE_TOOL = "tollgate.tool"
TOLLGATE_PROVIDER = "tollgate.provider"  # the policy's provider name
TOLLGATE_COST_MICRO_USD = "tollgate.cost_micro_usd"
TOLLGATE_DECISION = "tollgate.decision"  # "allowed" or the refusal code
TOLLGATE_BUDGET_SCOPE = "tollgate.budget.scope"  # the scope that refused
TOLLGATE_USAGE_OUTCOME = "tollgate.usage.outcome"  # metered, estimated_cut, ...
TOLLGATE_USAGE_ESTIMATED = "tollgate.usage.estimated"
TOLLGATE_PRICE_SOURCE = "tollgate.price.source"
TOLLGATE_PHASE = "tollgate.phase"
TOLLGATE_REDIS_OPERATION = "tollgate.redis.operation"

# Tollgate's own metrics.
TOLLGATE_SPEND = "tollgate.spend"  # counter, USD
TOLLGATE_REQUESTS = "tollgate.requests"  # counter, by decision
TOLLGATE_BUDGET_REMAINING = "tollgate.budget.remaining"  # gauge, micro-USD
TOLLGATE_PHASE_DURATION = "tollgate.extproc.phase.duration"  # histogram, s
TOLLGATE_REDIS_ERRORS = "tollgate.redis.errors"  # counter
TOLLGATE_JOURNAL_DEPTH = "tollgate.journal.depth"  # gauge, entries

# One ext_proc message is answered within Envoy's 200 ms default message
# timeout, so the phase histogram resolves the low milliseconds.
PHASE_DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.5,
)

DECISION_ALLOWED = "allowed"
NO_VALUE = "(none)"  # metric label of a dimension that does not apply
OVERFLOW_VALUE = "other"  # metric label of a value beyond the cardinality cap

# Tollgate's provider families as the conventions' well-known provider names.
# A family missing here is reported under its own name.
PROVIDER_NAMES = {
    "openai": "openai",
    "openai-compatible": "openai",
    "azure-openai": "azure.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
}
