from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Period(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PERIOD_UNSPECIFIED: _ClassVar[Period]
    PERIOD_DAY: _ClassVar[Period]
    PERIOD_WEEK: _ClassVar[Period]
    PERIOD_MONTH: _ClassVar[Period]
    PERIOD_QUARTER: _ClassVar[Period]

class BudgetSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUDGET_SOURCE_UNSPECIFIED: _ClassVar[BudgetSource]
    BUDGET_SOURCE_NONE: _ClassVar[BudgetSource]
    BUDGET_SOURCE_POLICY: _ClassVar[BudgetSource]
    BUDGET_SOURCE_OVERRIDE: _ClassVar[BudgetSource]

class Dimension(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIMENSION_UNSPECIFIED: _ClassVar[Dimension]
    DIMENSION_DAY: _ClassVar[Dimension]
    DIMENSION_IDENTITY: _ClassVar[Dimension]
    DIMENSION_TEAM: _ClassVar[Dimension]
    DIMENSION_PROJECT: _ClassVar[Dimension]
    DIMENSION_TOOL: _ClassVar[Dimension]
    DIMENSION_PROVIDER: _ClassVar[Dimension]
    DIMENSION_MODEL: _ClassVar[Dimension]
PERIOD_UNSPECIFIED: Period
PERIOD_DAY: Period
PERIOD_WEEK: Period
PERIOD_MONTH: Period
PERIOD_QUARTER: Period
BUDGET_SOURCE_UNSPECIFIED: BudgetSource
BUDGET_SOURCE_NONE: BudgetSource
BUDGET_SOURCE_POLICY: BudgetSource
BUDGET_SOURCE_OVERRIDE: BudgetSource
DIMENSION_UNSPECIFIED: Dimension
DIMENSION_DAY: Dimension
DIMENSION_IDENTITY: Dimension
DIMENSION_TEAM: Dimension
DIMENSION_PROJECT: Dimension
DIMENSION_TOOL: Dimension
DIMENSION_PROVIDER: Dimension
DIMENSION_MODEL: Dimension

class RefilledBudget(_message.Message):
    __slots__ = ("capacity_micro_usd", "refill_micro_usd", "refill_every")
    CAPACITY_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    REFILL_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    REFILL_EVERY_FIELD_NUMBER: _ClassVar[int]
    capacity_micro_usd: int
    refill_micro_usd: int
    refill_every: str
    def __init__(self, capacity_micro_usd: _Optional[int] = ..., refill_micro_usd: _Optional[int] = ..., refill_every: _Optional[str] = ...) -> None: ...

class CalendarBudget(_message.Message):
    __slots__ = ("amount_micro_usd", "period")
    AMOUNT_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    amount_micro_usd: int
    period: Period
    def __init__(self, amount_micro_usd: _Optional[int] = ..., period: _Optional[_Union[Period, str]] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("refilled", "calendar", "soft_limits_percent")
    REFILLED_FIELD_NUMBER: _ClassVar[int]
    CALENDAR_FIELD_NUMBER: _ClassVar[int]
    SOFT_LIMITS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    refilled: RefilledBudget
    calendar: CalendarBudget
    soft_limits_percent: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, refilled: _Optional[_Union[RefilledBudget, _Mapping]] = ..., calendar: _Optional[_Union[CalendarBudget, _Mapping]] = ..., soft_limits_percent: _Optional[_Iterable[int]] = ...) -> None: ...

class BucketState(_message.Message):
    __slots__ = ("level_micro_usd", "level_now_micro_usd", "capacity_micro_usd", "period", "updated_ms")
    LEVEL_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    LEVEL_NOW_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    level_micro_usd: int
    level_now_micro_usd: int
    capacity_micro_usd: int
    period: str
    updated_ms: int
    def __init__(self, level_micro_usd: _Optional[int] = ..., level_now_micro_usd: _Optional[int] = ..., capacity_micro_usd: _Optional[int] = ..., period: _Optional[str] = ..., updated_ms: _Optional[int] = ...) -> None: ...

class BudgetStatus(_message.Message):
    __slots__ = ("scope", "source", "effective", "policy", "override", "bucket")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    scope: str
    source: BudgetSource
    effective: Budget
    policy: Budget
    override: Budget
    bucket: BucketState
    def __init__(self, scope: _Optional[str] = ..., source: _Optional[_Union[BudgetSource, str]] = ..., effective: _Optional[_Union[Budget, _Mapping]] = ..., policy: _Optional[_Union[Budget, _Mapping]] = ..., override: _Optional[_Union[Budget, _Mapping]] = ..., bucket: _Optional[_Union[BucketState, _Mapping]] = ...) -> None: ...

class SetBudgetRequest(_message.Message):
    __slots__ = ("scope", "budget")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    scope: str
    budget: Budget
    def __init__(self, scope: _Optional[str] = ..., budget: _Optional[_Union[Budget, _Mapping]] = ...) -> None: ...

class GetBudgetRequest(_message.Message):
    __slots__ = ("scope",)
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    scope: str
    def __init__(self, scope: _Optional[str] = ...) -> None: ...

class DeleteBudgetRequest(_message.Message):
    __slots__ = ("scope",)
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    scope: str
    def __init__(self, scope: _Optional[str] = ...) -> None: ...

class DeleteBudgetResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class ListBudgetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBudgetsResponse(_message.Message):
    __slots__ = ("budgets",)
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    budgets: _containers.RepeatedCompositeFieldContainer[BudgetStatus]
    def __init__(self, budgets: _Optional[_Iterable[_Union[BudgetStatus, _Mapping]]] = ...) -> None: ...

class KeyRecord(_message.Message):
    __slots__ = ("key_id", "identity", "tool", "created_ms", "expires_ms", "revoked_ms", "active")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_MS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    identity: str
    tool: str
    created_ms: int
    expires_ms: int
    revoked_ms: int
    active: bool
    def __init__(self, key_id: _Optional[str] = ..., identity: _Optional[str] = ..., tool: _Optional[str] = ..., created_ms: _Optional[int] = ..., expires_ms: _Optional[int] = ..., revoked_ms: _Optional[int] = ..., active: _Optional[bool] = ...) -> None: ...

class IssueKeyRequest(_message.Message):
    __slots__ = ("identity", "tool", "expires_in")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    identity: str
    tool: str
    expires_in: str
    def __init__(self, identity: _Optional[str] = ..., tool: _Optional[str] = ..., expires_in: _Optional[str] = ...) -> None: ...

class IssueKeyResponse(_message.Message):
    __slots__ = ("key", "record")
    KEY_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    key: str
    record: KeyRecord
    def __init__(self, key: _Optional[str] = ..., record: _Optional[_Union[KeyRecord, _Mapping]] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[KeyRecord]
    def __init__(self, keys: _Optional[_Iterable[_Union[KeyRecord, _Mapping]]] = ...) -> None: ...

class RevokeKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class RevokeKeyResponse(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: KeyRecord
    def __init__(self, record: _Optional[_Union[KeyRecord, _Mapping]] = ...) -> None: ...

class GetSpendRequest(_message.Message):
    __slots__ = ("first_day", "last_day", "by")
    FIRST_DAY_FIELD_NUMBER: _ClassVar[int]
    LAST_DAY_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    first_day: str
    last_day: str
    by: _containers.RepeatedScalarFieldContainer[Dimension]
    def __init__(self, first_day: _Optional[str] = ..., last_day: _Optional[str] = ..., by: _Optional[_Iterable[_Union[Dimension, str]]] = ...) -> None: ...

class SpendGroup(_message.Message):
    __slots__ = ("dimensions", "requests", "input_tokens", "output_tokens", "cost_micro_usd", "estimated_cost_micro_usd")
    class DimensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    dimensions: _containers.ScalarMap[str, str]
    requests: int
    input_tokens: int
    output_tokens: int
    cost_micro_usd: int
    estimated_cost_micro_usd: int
    def __init__(self, dimensions: _Optional[_Mapping[str, str]] = ..., requests: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_micro_usd: _Optional[int] = ..., estimated_cost_micro_usd: _Optional[int] = ...) -> None: ...

class GetSpendResponse(_message.Message):
    __slots__ = ("groups", "total_cost_micro_usd")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[SpendGroup]
    total_cost_micro_usd: int
    def __init__(self, groups: _Optional[_Iterable[_Union[SpendGroup, _Mapping]]] = ..., total_cost_micro_usd: _Optional[int] = ...) -> None: ...
