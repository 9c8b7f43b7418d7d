"""Money is an integer number of micro-USD everywhere in Tollgate."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

MICRO_PER_USD = 1_000_000


def usd_to_micro(value: Decimal) -> int:
    """Decimal USD to integer micro-USD, rounding any sub-micro rest up."""
    return int((value * MICRO_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def format_usd(micro_usd: int) -> str:
    """Integer micro-USD as exact decimal USD text: ``1500000`` -> ``1.500000``."""
    sign = "-" if micro_usd < 0 else ""
    whole, rest = divmod(abs(micro_usd), MICRO_PER_USD)
    return f"{sign}{whole}.{rest:06d}"


def format_money(
    micro_usd: int, code: str = "USD", per_usd: Decimal = Decimal(1)
) -> str:
    """Integer micro-USD in the organisation's currency, six decimals:
    ``format_money(1_000_000, "EUR", Decimal("0.92"))`` -> ``0.920000 EUR``."""
    if code.upper() == "USD" and per_usd == 1:
        return f"{format_usd(micro_usd)} USD"
    amount = (Decimal(micro_usd) * per_usd / MICRO_PER_USD).quantize(
        Decimal("0.000001")
    )
    return f"{amount} {code.upper()}"
