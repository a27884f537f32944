"""A caseworker's journey: the case, the interview, her consent, preview, send, withdraw.

And the critical route of a case (docs/critical-route.md): each step recorded
by its own endpoint, and the route view (stage, steps, safeguards by country).

Every case and consent belongs to the authority that holds it; another
authority's is answered as absent (404). The domain rules (safeguards,
minimization, policies, consent checks) live in the services this module
calls; here are only roles, ownership and HTTP.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from aiohttp import web

from node.api.guards import BadRequest, allow, json_body, principal_of
from node.api.keys import API_CONTEXT, ON_QUEUED
from node.api.openapi import validate_body
from node.api.users import Principal, Role
from node.casework import cases, consents, disclose, route
from node.core.errors import PuenteError
from node.rules.consent import ConsentError, Officer, Scope
from node.storage.context import NodeContext


class NotFound(PuenteError):
    reason = "not_found"
    http_status = 404


def _no_case() -> NotFound:
    # One answer for absent and for another authority's: its existence is information.
    return NotFound("not_found", "no such case for your authority")


async def _own_case(ctx: NodeContext, principal: Principal, case_id: str) -> cases.Case:
    try:
        case = await cases.find_case(ctx, case_id, authority=principal.authority)
    except cases.CaseError as exc:
        if exc.reason == "unknown_case":
            raise _no_case() from exc
        raise
    if case.authority != principal.authority:
        raise _no_case()
    return case


async def _own_consent(ctx: NodeContext, principal: Principal, consent_id: str) -> str:
    try:
        await _own_case(ctx, principal, await consents.case_of_consent(ctx, consent_id))
    except (ConsentError, NotFound) as exc:
        raise NotFound("not_found", "no such consent for your authority") from exc
    return consent_id


def _officer(ctx: NodeContext, principal: Principal) -> Officer:
    return Officer(ctx.node_id, principal.authority, principal.username)


def _notify(request: web.Request) -> None:
    wake: Callable[[], None] | None = request.app.get(ON_QUEUED)
    if wake is not None:
        wake()


async def _body(request: web.Request, component: str) -> dict[str, Any]:
    body = await json_body(request)
    validate_body(component, body)
    if not isinstance(body, dict):
        raise BadRequest("invalid_request", "the body must be a JSON object")
    return body


@allow(Role.CASEWORKER)
async def create_case(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = await _body(request, "CreateCaseRequest")
    case = await cases.create_case(
        request.app[API_CONTEXT], authority=principal.authority, document=body["document"]
    )
    return web.json_response(case.as_json(), status=201)


@allow(Role.CASEWORKER)
async def list_cases(request: web.Request) -> web.Response:
    principal = principal_of(request)
    own = await cases.list_cases(request.app[API_CONTEXT], authority=principal.authority)
    return web.json_response(
        {
            "items": [
                {
                    "case_id": c.case_id,
                    "case_ref": c.case_ref,
                    "updated_at": c.updated_at.isoformat(),
                }
                for c in own
            ]
        }
    )


@allow(Role.CASEWORKER)
async def get_case(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    case = await _own_case(ctx, principal_of(request), request.match_info["case_id"])
    return web.json_response(case.as_json())


@allow(Role.CASEWORKER)
async def record_interview(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    principal = principal_of(request)
    case = await _own_case(ctx, principal, request.match_info["case_id"])
    body = await _body(request, "InterviewRequest")
    updated = await cases.record_interview(
        ctx, case.case_id, authority=principal.authority, interview=body["interview"]
    )
    return web.json_response(updated.as_json())


@allow(Role.CASEWORKER)
async def coverage(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    case = await _own_case(ctx, principal_of(request), request.match_info["case_id"])
    report = await cases.coverage(ctx, case.case_ref, authority=case.authority)
    return web.json_response(report.as_json())


@allow(Role.CASEWORKER)
async def record_consent(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    principal = principal_of(request)
    case = await _own_case(ctx, principal, request.match_info["case_id"])
    body = await _body(request, "ConsentRequest")
    draft = {
        **body["consent"],
        "case_ref": case.case_ref,
        "recorded_by": _officer(ctx, principal).as_json(),
    }
    record = await consents.record_consent(ctx, draft)
    return web.json_response(record.as_document(), status=201)


def _disclosure_args(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "doc_type": body["doc_type"],
        "purpose": body["purpose"],
        "recipient_node": body["recipient"]["node"],
        "recipient_authority": body["recipient"]["authority"],
        "consent_id": body.get("consent_id"),
        "vital_interest": body.get("vital_interest_justification"),
    }


@allow(Role.CASEWORKER)
async def preview(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    principal = principal_of(request)
    case = await _own_case(ctx, principal, request.match_info["case_id"])
    body = await _body(request, "DisclosureRequest")
    result = await disclose.preview_disclosure(
        ctx, case=case.case_id, sender_authority=principal.authority, **_disclosure_args(body)
    )
    return web.json_response(result.as_json())


@allow(Role.CASEWORKER)
async def send(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    principal = principal_of(request)
    case = await _own_case(ctx, principal, request.match_info["case_id"])
    body = await _body(request, "DisclosureRequest")
    ttl_hours = body.get("ttl_hours")
    sent = await disclose.disclose(
        ctx,
        case=case,
        sender_authority=principal.authority,
        ttl=dt.timedelta(hours=ttl_hours) if ttl_hours else None,
        user=principal.username,
        **_disclosure_args(body),
    )
    _notify(request)
    return web.json_response(
        {
            "message_id": sent.message_id,
            "state": "queued",
            "sent_fields": list(sent.preview.sent_fields),
            "withheld": dict(sent.preview.withheld),
        },
        status=202,
    )


@allow(Role.CASEWORKER)
async def consent_status(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    consent_id = await _own_consent(ctx, principal_of(request), request.match_info["consent_id"])
    status = await consents.consent_status(ctx, consent_id)
    return web.json_response(status.as_json())


def _change_view(outcome: consents.WithdrawalOutcome) -> dict[str, Any]:
    """What a withdrawal or narrowing did at once: the consent, what stopped, who is told."""
    return {
        "consent": outcome.consent.as_document(),
        "stopped": list(outcome.stopped),
        "withdrawal_notices": list(outcome.notices),
    }


@allow(Role.CASEWORKER)
async def withdraw(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    principal = principal_of(request)
    consent_id = await _own_consent(ctx, principal, request.match_info["consent_id"])
    outcome = await consents.withdraw_consent(ctx, consent_id, by=_officer(ctx, principal))
    _notify(request)
    return web.json_response(_change_view(outcome))


@allow(Role.CASEWORKER)
async def narrow(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    principal = principal_of(request)
    consent_id = await _own_consent(ctx, principal, request.match_info["consent_id"])
    body = await _body(request, "NarrowRequest")
    try:
        scope = Scope.from_json(body["scope"])
    except ValueError as exc:
        raise BadRequest("invalid_request", "valid_until is not a readable date-time") from exc
    outcome = await consents.narrow_consent(ctx, consent_id, scope, by=_officer(ctx, principal))
    _notify(request)
    return web.json_response(_change_view(outcome))


# Each step of the critical route: its path segment, and the body member holding it.
ROUTE_STEPS = {
    "identification": ("identification", "RouteIdentificationRequest"),
    "primary-assistance": ("primary_assistance", "RoutePrimaryAssistanceRequest"),
    "risk-assessment": ("risk_assessment", "RouteRiskAssessmentRequest"),
    "durable-solution": ("durable_solution", "RouteDurableSolutionRequest"),
}


@allow(Role.CASEWORKER)
async def route_view(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    case = await _own_case(ctx, principal_of(request), request.match_info["case_id"])
    view = await route.route_view(ctx, case.case_id)
    return web.json_response(view.as_json())


@allow(Role.CASEWORKER)
async def record_route_step(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    principal = principal_of(request)
    case = await _own_case(ctx, principal, request.match_info["case_id"])
    step, component = ROUTE_STEPS[request.match_info["step"]]
    body = await _body(request, component)
    view = await route.record_step(
        ctx,
        case.case_id,
        step=step,
        authority=principal.authority,
        content=body[step],
        country_of_origin=body.get("country_of_origin"),
    )
    return web.json_response(view.as_json())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/cases", list_cases)
    app.router.add_post("/api/v1/cases", create_case)
    app.router.add_get("/api/v1/cases/{case_id}", get_case)
    app.router.add_post("/api/v1/cases/{case_id}/interview", record_interview)
    app.router.add_get("/api/v1/cases/{case_id}/coverage", coverage)
    app.router.add_post("/api/v1/cases/{case_id}/consents", record_consent)
    app.router.add_post("/api/v1/cases/{case_id}/disclosures/preview", preview)
    app.router.add_post("/api/v1/cases/{case_id}/disclosures", send)
    app.router.add_get("/api/v1/cases/{case_id}/route", route_view)
    steps = "|".join(ROUTE_STEPS)
    app.router.add_post(f"/api/v1/cases/{{case_id}}/route/{{step:{steps}}}", record_route_step)
    app.router.add_get("/api/v1/consents/{consent_id}", consent_status)
    app.router.add_post("/api/v1/consents/{consent_id}/withdraw", withdraw)
    app.router.add_post("/api/v1/consents/{consent_id}/narrow", narrow)
