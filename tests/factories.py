"""Subscription payloads shaped like Zuora's `GET /v1/subscriptions/{key}` response."""

from __future__ import annotations

import copy
from typing import Any


def charge(charge_id: str, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": charge_id,
        "originalChargeId": f"orig-{charge_id}",
        "number": f"C-{charge_id[-8:]}",
        "name": "Seats",
        "productRatePlanChargeId": "prpc-seats",
        "type": "Recurring",
        "model": "PerUnit",
        "price": 19.0,
        "quantity": 10.0,
        "uom": "Seat",
        "currency": "USD",
        "billingPeriod": "Month",
        "segment": 1,
        "version": 1,
        "effectiveStartDate": "2026-01-01",
        "effectiveEndDate": "2027-01-01",
        "chargedThroughDate": None,
        "mrr": 190.0,
        "tcv": 2280.0,
        "tiers": None,
        "discountApplyDetails": [],
    }
    doc.update(overrides)
    return doc


def rate_plan(plan_id: str, charges: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": plan_id,
        "productId": "prod-1",
        "productName": "Portal",
        "productSku": "SKU-00000001",
        "productRatePlanId": "prp-1",
        "ratePlanName": "Premium",
        "lastChangeType": None,
        "subscriptionRatePlanNumber": f"SRP-{plan_id[-6:]}",
        "ratePlanCharges": charges,
    }
    doc.update(overrides)
    return doc


def subscription(
    number: str = "A-S00000001",
    *,
    version: int = 1,
    zuora_id: str | None = None,
    plans: list[dict[str, Any]] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A subscription with two rate plans of one and two charges unless `plans` is given."""
    if plans is None:
        plans = [
            rate_plan(f"{number}-rp1", [charge(f"{number}-c11")]),
            rate_plan(
                f"{number}-rp2",
                [charge(f"{number}-c21", price="5.50", quantity="3"), charge(f"{number}-c22")],
            ),
        ]
    doc: dict[str, Any] = {
        "success": True,
        "id": zuora_id or f"{number}-v{version}",
        "subscriptionNumber": number,
        "version": version,
        "revision": f"{version}.0",
        "accountId": "acc-1",
        "accountNumber": "A00000001",
        "accountName": "Acme",
        "invoiceOwnerAccountId": "acc-1",
        "status": "Active",
        "termType": "TERMED",
        "contractEffectiveDate": "2026-01-01",
        "serviceActivationDate": "2026-01-01",
        "customerAcceptanceDate": "2026-01-01",
        "subscriptionStartDate": "2026-01-01",
        "subscriptionEndDate": "2027-01-01",
        "termStartDate": "2026-01-01",
        "termEndDate": "2027-01-01",
        "initialTerm": 12,
        "initialTermPeriodType": "Month",
        "currentTerm": 12,
        "renewalTerm": 12,
        "autoRenew": True,
        "currency": "USD",
        "notes": None,
        "billToContact": {"firstName": "Ada"},
        "soldToContact": [],
        "SupportTier__c": "Premium",
        "SeatOverride__c": None,
        "ContractOwner__c": "ops@example.com",
        "ratePlans": plans,
    }
    doc.update(overrides)
    return copy.deepcopy(doc)
