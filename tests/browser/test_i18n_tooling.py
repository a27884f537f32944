"""scripts/check-i18n against a tiny tree laid out like node/, with the real babel.cfg.

The web interface's catalogs do not exist yet, so the check is shown here on
invented messages: it passes with no catalog, creates the es/en/fr catalogs with
--update, and fails on each kind of problem a translator or a developer leaves.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "check-i18n"
LANGUAGES = ("es", "en", "fr")

VIEWS = """from gettext import gettext as _, ngettext


def heading(count: int) -> tuple[str, str]:
    # TRANSLATORS: the title of the reception officer's work queue
    return _("Today's arrivals"), ngettext("%(num)d arrival", "%(num)d arrivals", count) % {
        "num": count
    }
"""
TEMPLATE = """<h1>{% trans %}Arrival
    details{% endtrans %}</h1>
<p>{{ _("Priority: %(level)s", level=level) }}</p>
"""

# What a translator would write; English repeats the source on purpose.
TRANSLATIONS: dict[str, dict[str, str | tuple[str, ...]]] = {
    "es": {
        "Today's arrivals": "Llegadas de hoy",
        "%(num)d arrival": ("%(num)d llegada", "%(num)d llegadas", "%(num)d llegadas"),
        "Arrival details": "Datos de la llegada",
        "Priority: %(level)s": "Prioridad: %(level)s",
        "Referred to shelter": "Remitida a un albergue",
    },
    "en": {
        "Today's arrivals": "Today's arrivals",
        "%(num)d arrival": ("%(num)d arrival", "%(num)d arrivals"),
        "Arrival details": "Arrival details",
        "Priority: %(level)s": "Priority: %(level)s",
        "Referred to shelter": "Referred to shelter",
    },
    "fr": {
        "Today's arrivals": "Arrivées du jour",
        "%(num)d arrival": ("%(num)d arrivée", "%(num)d d'arrivées", "%(num)d arrivées"),
        "Arrival details": "Détails de l'arrivée",
        "Priority: %(level)s": "Priorité : %(level)s",
        "Referred to shelter": "Orientée vers un foyer",
    },
}


def run_check(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def catalog_path(root: Path, language: str) -> Path:
    return root / "node" / "web" / "locale" / language / "LC_MESSAGES" / "messages.po"


def edit_catalog(root: Path, language: str, change: Callable[[Catalog], None]) -> None:
    path = catalog_path(root, language)
    with path.open("rb") as stream:
        catalog = read_po(stream, locale=language)
    change(catalog)
    with path.open("wb") as stream:
        write_po(stream, catalog)


def translate(catalog: Catalog) -> None:
    language = str(catalog.locale)
    for message in catalog:
        if message.id:
            singular = message.id if isinstance(message.id, str) else message.id[0]
            message.string = TRANSLATIONS[language][singular]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A repository with babel.cfg, one module and one template under node/, no catalog."""
    shutil.copy(REPO / "babel.cfg", tmp_path / "babel.cfg")
    (tmp_path / "node" / "web" / "templates").mkdir(parents=True)
    (tmp_path / "node" / "web" / "views.py").write_text(VIEWS, encoding="utf-8")
    (tmp_path / "node" / "web" / "templates" / "arrival.html").write_text(
        TEMPLATE, encoding="utf-8"
    )
    return tmp_path


@pytest.fixture
def translated(tree: Path) -> Path:
    """The tree with complete es/en/fr catalogs."""
    created = run_check(tree, "--update", "--locale-dir", "node/web/locale")
    assert created.returncode == 0, created.stderr
    for language in LANGUAGES:
        edit_catalog(tree, language, translate)
    return tree


def test_passes_with_no_catalogs(tree: Path) -> None:
    result = run_check(tree)
    assert result.returncode == 0, result.stderr
    assert "nothing to check" in result.stdout


def test_update_creates_the_three_catalogs_and_the_check_wants_them_translated(
    tree: Path,
) -> None:
    created = run_check(tree, "--update", "--locale-dir", "node/web/locale")
    assert created.returncode == 0, created.stderr
    for language in LANGUAGES:
        text = catalog_path(tree, language).read_text(encoding="utf-8")
        assert 'msgid "Arrival details"' in text  # {% trans %} whitespace trimmed
        assert "TRANSLATORS: the title of the reception officer's work queue" in text
        assert "#: node/web/views.py\n" in text  # file names, no line numbers

    result = run_check(tree)
    assert result.returncode == 1
    for language in LANGUAGES:
        assert (
            f"node/web/locale/{language}/LC_MESSAGES/messages.po: "
            "empty translation of msgid 'Arrival details'"
        ) in result.stderr


def test_complete_catalogs_pass_until_the_code_changes(translated: Path) -> None:
    result = run_check(translated)
    assert result.returncode == 0, result.stderr
    assert "3 catalog(s) (en, es, fr) complete and up to date with 4 message(s)" in result.stdout

    template = translated / "node" / "web" / "templates" / "arrival.html"
    template.write_text(
        TEMPLATE + "<p>{% trans %}Referred to shelter{% endtrans %}</p>\n", encoding="utf-8"
    )
    stale = run_check(translated)
    assert stale.returncode == 1
    assert stale.stderr.count("missing msgid 'Referred to shelter' (out of date") == 3

    assert run_check(translated, "--update").returncode == 0
    untranslated = run_check(translated)
    assert untranslated.returncode == 1
    assert untranslated.stderr.count("empty translation of msgid 'Referred to shelter'") == 3
    for language in LANGUAGES:
        edit_catalog(translated, language, translate)
    assert run_check(translated).returncode == 0


def test_reports_fuzzy_stale_broken_and_missing_catalogs(translated: Path) -> None:
    def fuzzy(catalog: Catalog) -> None:
        message = catalog.get("Arrival details")
        assert message is not None
        message.flags.add("fuzzy")

    def stale_and_fuzzy_header(catalog: Catalog) -> None:
        catalog.add("Removed long ago", "Removed long ago")
        catalog.fuzzy = True

    def wrong_placeholder(catalog: Catalog) -> None:
        message = catalog.get("Priority: %(level)s")
        assert message is not None
        message.string = "Priorité : %(niveau)s"

    edit_catalog(translated, "es", fuzzy)
    edit_catalog(translated, "en", stale_and_fuzzy_header)
    edit_catalog(translated, "fr", wrong_placeholder)
    result = run_check(translated)
    assert result.returncode == 1
    report = result.stderr
    assert "es/LC_MESSAGES/messages.po: fuzzy translation of msgid 'Arrival details'" in report
    assert "en/LC_MESSAGES/messages.po: the header is marked fuzzy" in report
    assert (
        "en/LC_MESSAGES/messages.po: msgid 'Removed long ago' is no longer in the code"
    ) in report
    assert (
        "fr/LC_MESSAGES/messages.po: msgid 'Priority: %(level)s': "
        "unknown named placeholder 'niveau'"
    ) in report

    catalog_path(translated, "fr").unlink()
    missing = run_check(translated)
    assert missing.returncode == 1
    assert "node/web/locale/fr/LC_MESSAGES/messages.po: missing; every locale folder" in (
        missing.stderr
    )
