"""The standardized interview: its topics and who has already asked what.

Pure functions, no I/O. A case or case handoff records *coverage*: one entry
per topic asked (when, by which authority, in which language, with or
without an interpreter), never her answers. From the coverage of every
summary a recipient holds, it sees which topics are covered and asks only
what is missing (no re-victimization: seed 002, "avoid unnecessary and
repeated requests for testimonies").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from node.core import schemas
from node.core.clock import parse_rfc3339


def _topics() -> tuple[str, ...]:
    common = schemas.schema_document("https://puente.int/schemas/case-common/1.0")
    return tuple(common["$defs"]["interviewTopic"]["enum"])


# Every topic of the standardized interview, in interview order (from the schema).
TOPICS: tuple[str, ...] = _topics()

# Which topic an answer belongs to: asking about the topic is what produced it.
INDICATOR_TOPICS: Mapping[str, str] = {
    "victim_of_abuse_or_rights_violation": "abuse_and_violations",
    "does_not_speak_local_language": "languages",
    "health_condition": "health",
    "emotional_distress": "emotional_state",
    "suspected_substance_influence": "emotional_state",
    "persecution": "persecution",
    "fear_of_return": "fear_of_return",
    "fled_pervasive_violence": "violence_fled",
    "gang_recruitment": "violence_fled",
    "armed_conflict": "violence_fled",
    "displaced_by_disaster": "displacement_by_disaster",
    "smuggling_or_trafficking_contact": "trafficking_smuggling",
    "appears_controlled_by_companion": "trafficking_smuggling",
    "does_not_know_country": "orientation",
    "asks_for_help": "help_request",
    "no_identity_documents": "identity_documents",
}
VULNERABILITY_TOPICS: Mapping[str, str] = {
    "pregnant": "pregnancy",
    "pregnant_adolescent": "pregnancy",
    "alone_with_children": "children",
    "social_risk_area_or_threatened": "social_risk",
    "little_education_or_unemployed": "education_employment",
    "gender_based_violence": "gender_based_violence",
    "other_violations": "abuse_and_violations",
    "disability": "disability",
    "indigenous": "indigenous_identity",
    "diverse_gender_identity_or_sexual_orientation": "gender_identity_sexual_orientation",
}


@dataclass(frozen=True)
class CoverageEntry:
    """One topic asked, by whom, when, in which language, with or without an interpreter."""

    topic: str
    asked_at: dt.datetime
    node: str
    authority: str
    language: str
    interpreter: bool

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> CoverageEntry:
        return cls(
            topic=entry["topic"],
            asked_at=parse_rfc3339(entry["asked_at"]),
            node=entry["node"],
            authority=entry["authority"],
            language=entry["language"],
            interpreter=bool(entry["interpreter"]),
        )


@dataclass(frozen=True)
class CoverageReport:
    """Topics already asked (with every time they were) and topics still missing."""

    covered: Mapping[str, tuple[CoverageEntry, ...]]
    missing: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "covered": {
                topic: [
                    {
                        "asked_at": e.asked_at.isoformat(),
                        "node": e.node,
                        "authority": e.authority,
                        "language": e.language,
                        "interpreter": e.interpreter,
                    }
                    for e in entries
                ]
                for topic, entries in self.covered.items()
            },
            "missing": list(self.missing),
        }


def coverage_of(document: Mapping[str, Any]) -> list[CoverageEntry]:
    """The coverage entries of a case, case handoff or addendum."""
    interview = document.get("interview")
    if not isinstance(interview, Mapping):
        return []
    return [CoverageEntry.from_json(e) for e in interview.get("coverage", [])]


def coverage_report(entries: Iterable[CoverageEntry]) -> CoverageReport:
    """Group coverage by topic (oldest first) and list the topics nobody has asked."""
    by_topic: dict[str, list[CoverageEntry]] = {}
    for entry in entries:
        by_topic.setdefault(entry.topic, []).append(entry)
    covered = {
        topic: tuple(sorted(by_topic[topic], key=lambda e: e.asked_at))
        for topic in TOPICS
        if topic in by_topic
    }
    return CoverageReport(covered=covered, missing=tuple(t for t in TOPICS if t not in by_topic))


def answered_topics(interview: Mapping[str, Any]) -> set[str]:
    """Topics an interview section holds answers for (each answer implies its topic was asked)."""
    topics = {INDICATOR_TOPICS[i] for i in interview.get("identification_indicators", [])}
    topics |= {VULNERABILITY_TOPICS[v] for v in interview.get("vulnerability_conditions", [])}
    if interview.get("persecution_grounds"):
        topics.add("persecution")
    if interview.get("other_violations"):
        topics.add("abuse_and_violations")
    return topics


def uncovered_answers(interview: Mapping[str, Any]) -> list[str]:
    """Topics with answers but no coverage entry: an interview record must say who asked."""
    covered = {e["topic"] for e in interview.get("coverage", [])}
    return sorted(answered_topics(interview) - covered)


def merge_interview(base: Mapping[str, Any], addition: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` interview section with ``addition``'s answers and coverage added (set union)."""
    merged: dict[str, Any] = {k: v for k, v in base.items()}
    for key in (
        "identification_indicators",
        "persecution_grounds",
        "vulnerability_conditions",
        "other_violations",
    ):
        values = list(merged.get(key, []))
        values += [v for v in addition.get(key, []) if v not in values]
        if values:
            merged[key] = values
    coverage: list[Mapping[str, Any]] = list(merged.get("coverage", []))
    coverage += [e for e in addition.get("coverage", []) if e not in coverage]
    merged["coverage"] = coverage
    return merged


def only_topics(interview: Mapping[str, Any], topics: Sequence[str]) -> dict[str, Any]:
    """The part of an interview section about ``topics`` only (what an addendum shares back)."""
    wanted = set(topics)
    out: dict[str, Any] = {}
    indicators = [
        i for i in interview.get("identification_indicators", []) if INDICATOR_TOPICS[i] in wanted
    ]
    conditions = [
        v
        for v in interview.get("vulnerability_conditions", [])
        if VULNERABILITY_TOPICS[v] in wanted
    ]
    if indicators:
        out["identification_indicators"] = indicators
    if "persecution" in wanted and interview.get("persecution_grounds"):
        out["persecution_grounds"] = list(interview["persecution_grounds"])
    if conditions:
        out["vulnerability_conditions"] = conditions
    if "abuse_and_violations" in wanted and interview.get("other_violations"):
        out["other_violations"] = list(interview["other_violations"])
    out["coverage"] = [e for e in interview.get("coverage", []) if e["topic"] in wanted]
    return out
