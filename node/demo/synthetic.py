"""Synthetic, obviously invented case data for the demo and tests. Never real people."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

GIVEN = ["Ana Lucía", "María José", "Rosa Elena", "Juana", "Carmen", "Sofía", "Isabel", "Lucía"]
FAMILY = ["Ejemplo Prueba", "Ficticia Demo", "Inventada Sample", "Modelo Test"]
CHILDREN = ["Luis", "Camila", "Mateo", "Valentina", "Diego"]
PLACES = {
    "GT": ("Aeropuerto Internacional La Aurora, Ciudad de Guatemala", "air"),
    "HN": ("Centro de Atención al Migrante Retornado, San Pedro Sula", "air"),
    "SV": ("Frontera La Hachadura", "land"),
}
NEEDS = ["food", "medical_care", "psychological_care", "clothing", "interpretation", "shelter"]
LANGUAGES = {"GT": ["es", "mam"], "HN": ["es"], "SV": ["es"]}


def return_notice(
    rng: random.Random, *, destination: str, today: dt.date, serial: int
) -> dict[str, Any]:
    """A schema-valid return notice for a fictitious woman returning to ``destination``."""
    place, means = PLACES.get(destination, ("Punto de entrada de prueba", "land"))
    notice: dict[str, Any] = {
        "case_ref": f"MX-DEMO-{today.year}-{serial:06d}",
        "person": {
            "given_names": rng.choice(GIVEN),
            "family_names": rng.choice(FAMILY),
            "age_estimate": rng.randint(16, 45),
            "nationality": destination,
            "languages": LANGUAGES.get(destination, ["es"]),
        },
        "arrival": {
            "date": (today + dt.timedelta(days=rng.randint(1, 10))).isoformat(),
            "time": f"{rng.randint(6, 20):02d}:{rng.choice(['00', '30'])}",
            "place_of_entry": place,
            "means": means,
            "transport_reference": f"DEMO-{rng.randint(100, 999)}",
        },
        "immediate_needs": sorted(rng.sample(NEEDS, k=rng.randint(1, 3))),
        "priority_flags": [],
    }
    age = notice["person"]["age_estimate"]
    notice["person"]["age_status"] = "minor" if age < 18 else "adult"
    if age < 18:
        notice["priority_flags"].append("minor")
    if rng.random() < 0.4:
        notice["accompanying_children"] = [
            {
                "given_names": rng.choice(CHILDREN),
                "age": rng.randint(0, 12),
                "relationship": "daughter",
            }
        ]
        notice["priority_flags"].append("alone_with_children")
    if rng.random() < 0.3:
        notice["priority_flags"].append("pregnant")
    if "mam" in notice["person"]["languages"]:
        notice["priority_flags"].append("needs_interpreter")
    return notice
