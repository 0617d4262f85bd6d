"""The scorer on synthetic journeys written through the real sink, via the real CLI."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from journeys import DAY, archetypes, build_mmdb, moment, write_events
from servers import ROOT, clean_env

T = "2026-06-01T00:00:00Z"
OVERRIDES = """
[[org]]
name = "Acme Partner"
domain = "partner.example"
networks = ["100.64.1.0/24"]

[[not]]
network = "198.51.100.0/24"
organisation = "Driveby Co"
"""
RULES = """
[vulnerable]
tool = ["<1.1"]
"""


def gateway(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=ROOT,
        env=clean_env(), timeout=120,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    base = tmp_path_factory.mktemp("scorer")
    db = base / "events.sqlite3"
    write_events(db, archetypes(moment(T)))
    mmdbs = build_mmdb(base)
    (base / "overrides.toml").write_text(OVERRIDES)
    (base / "rules.toml").write_text(RULES)
    return base, db, mmdbs


def score_json(base: Path, db: Path, mmdbs, *extra: str) -> dict[str, dict]:
    args = ["score", "--db", str(db), "--state", str(base / "scores.sqlite3"), "--overrides",
            str(base / "overrides.toml"), "--rules", str(base / "rules.toml"), "--json"]  # fmt: skip
    for m in mmdbs:
        args += ["--mmdb", str(m)]
    out = gateway(*args, *extra).stdout
    return {doc["organisation"]: doc for doc in json.loads(out)}


@pytest.fixture(scope="module")
def orgs(store):
    base, db, mmdbs = store
    return score_json(base, db, mmdbs, "--as-of", T)


def test_stages_of_the_archetypes(orgs):
    stages = {name: doc["stage"] for name, doc in orgs.items()}
    assert stages["Driveby Networks"] == "Interest"  # "this is not Driveby Co" → next source
    assert stages["Docs Inc"] == "Investigation"  # docs in two consecutive weeks
    assert stages["Evalcorp"] == "Investigation"  # a download plus page views
    assert stages["Experimental GmbH"] == "Experimentation"
    assert stages["Prod Corp"] == "Ongoing Usage"
    assert stages["Churn Ltd"] == "Inactive"
    assert stages["Intent LLC"] == "Experimentation"


def test_automation_never_promotes(orgs):
    ci = orgs["AMAZON-02"]
    assert ci["network_type"] == "hosting"
    assert ci["stage"] == "Interest"  # 219 automated downloads, one human page view
    assert ci["automation"]["ci"] == 219 and ci["automation"]["burst"] is True
    assert (
        ci["unique_sources_30d"]["endpoints"] == 3
    )  # two runners and one browser, not 219 machines
    assert ci["points"] < 219 * 10 * 0.1  # scored down: weight 0.2 and the daily cap
    mirror = orgs["Mirror Hosting"]
    assert mirror["automation"]["mirror"] == 39 and mirror["stage"] == "Interest"
    docs = orgs["Docs Inc"]
    assert docs["automation"]["bot"] == 30 and docs["stage"] == "Investigation"


def test_levels_sources_upgrades_and_flags(orgs):
    prod = orgs["Prod Corp"]
    assert prod["levels"] == {
        "downloads": "best",
        "docs": "best",
        "website": "none",
        "telemetry": "best",
    }
    assert prod["upgrade"] is True and prod["upgrades"] == ["tool"]
    assert prod["packages"] == {"tool": ["1.0", "1.1", "1.2"]}
    assert prod["unique_sources_30d"]["endpoints"] >= 3
    assert prod["downloads_by_channel"] == {"container": 3, "file": 4}
    assert prod["churn"] is False and prod["vulnerable_versions"] == []
    assert [t["stage"] for t in prod["timeline"]][-1] == "Ongoing Usage"
    churn = orgs["Churn Ltd"]
    assert churn["churn"] is True and churn["vulnerable_versions"] == ["tool==1.0"]
    assert [t["stage"] for t in churn["timeline"]][-1] == "Inactive"
    assert any(t["stage"] in ("Experimentation", "Ongoing Usage") for t in churn["timeline"])
    assert orgs["Intent LLC"]["high_intent"] is True
    assert not any(o["high_intent"] for n, o in orgs.items() if n != "Intent LLC")
    assert orgs["Docs Inc"]["levels"]["docs"] == "good"
    assert orgs["Experimental GmbH"]["downloads_by_channel"] == {"pypi": 3}
    assert orgs["Experimental GmbH"]["unique_sources_30d"] == {"endpoints": 1, "origins": 2}


def test_weekly_totals_and_downloads_by_version(orgs):
    """Totals by week (Monday-started) add up to the totals; downloads per package, version
    and channel add up to the downloads per channel."""
    import datetime as dt
    from collections import Counter

    for name, doc in orgs.items():
        summed: Counter[str] = Counter()
        for week, counts in doc["weekly"].items():
            assert dt.date.fromisoformat(week).weekday() == 0, (name, week)
            summed.update(counts)
        assert dict(summed) == {k: v for k, v in doc["totals"].items() if v}, name
        by_channel: Counter[str] = Counter()
        for row in doc["downloads_by_version"]:
            by_channel[row["channel"]] += row["downloads"]
            assert row["first_seen"] <= row["last_seen"]
            assert 0 <= row["human_downloads"] <= row["downloads"]
        assert all(by_channel[c] <= n for c, n in doc["downloads_by_channel"].items()), name
    prod = orgs["Prod Corp"]
    rows = {(r["version"], r["channel"]): r["downloads"] for r in prod["downloads_by_version"]}
    assert {v for v, _ in rows} == {"1.0", "1.1", "1.2"}
    assert sum(rows.values()) == sum(prod["downloads_by_channel"].values()) == 7
    weeks = list(prod["weekly"])
    assert weeks == sorted(weeks)  # weeks with activity, in order, spanning its 90+ days
    span = dt.date.fromisoformat(weeks[-1]) - dt.date.fromisoformat(weeks[0])
    assert span.days >= 84


def test_enrichment_types_and_confidence(orgs):
    assert orgs["Comcast Cable Communications"]["network_type"] == "isp"
    partner = orgs["Acme Partner"]
    assert partner["confidence"] == 1.0 and partner["attribution_source"] == "override"
    assert partner["domain"] == "partner.example"
    prod = orgs["Prod Corp"]  # company database and ASN agree
    assert prod["network_type"] == "company" and prod["confidence_label"] == "high"
    assert prod["domain"] == "prod.example"
    evalcorp = orgs["Evalcorp"]  # company database, ASN disagrees
    assert evalcorp["confidence"] < prod["confidence"]
    assert orgs["Driveby Networks"]["attribution_source"] == "asn_db"


def test_dnt_traffic_is_never_attributed(orgs):
    assert orgs["Driveby Networks"]["totals"].get("download", 0) == 0
    assert all(not name.startswith("(") for name in orgs)


def test_sorted_by_stage_then_points(orgs):
    ranked = list(orgs)
    assert ranked[0] == "Prod Corp"
    assert (
        ranked.index("Experimental GmbH")
        < ranked.index("Evalcorp")
        < ranked.index("Driveby Networks")
    )


def test_as_of_two_times(store):
    base, db, mmdbs = store
    early = score_json(base, db, mmdbs, "--as-of", "2026-03-15T00:00:00Z")  # T - 78 days
    late = score_json(base, db, mmdbs, "--as-of", "2026-05-24T00:00:00Z")  # 70 days later
    assert early["Churn Ltd"]["stage"] == "Experimentation"
    assert late["Churn Ltd"]["stage"] == "Inactive"
    assert "Intent LLC" not in early  # not seen yet
    again = score_json(base, db, mmdbs, "--as-of", "2026-03-15T00:00:00Z")
    assert again == early  # reproducible


def test_incremental_equals_full(tmp_path):
    """Folding the events in three incremental runs (same rules and sources each time) gives
    what one full run gives."""
    now = time.time()
    events = sorted(archetypes(now - 60), key=lambda e: e.ts)
    db = tmp_path / "events.sqlite3"
    mmdbs = build_mmdb(tmp_path)
    (tmp_path / "overrides.toml").write_text(OVERRIDES)
    (tmp_path / "rules.toml").write_text(RULES)
    args = ["score", "--db", str(db), "--state", str(tmp_path / "scores.sqlite3"),
            "--overrides", str(tmp_path / "overrides.toml"), "--rules", str(tmp_path / "rules.toml"),
            *sum((["--mmdb", str(m)] for m in mmdbs), [])]  # fmt: skip
    third = len(events) // 3
    write_events(db, events[:third])
    assert "full run" in gateway(*args).stdout
    write_events(db, events[third : 2 * third])
    assert f"incremental run, {third} events read" in gateway(*args).stdout
    write_events(db, events[2 * third :])
    inc = {d["organisation"]: d for d in json.loads(gateway(*args, "--json").stdout)}
    assert "incremental run, 0 events read" in gateway(*args).stdout
    full = score_json(tmp_path, db, mmdbs, "--full")
    assert inc == full
    assert full["Prod Corp"]["stage"] == "Ongoing Usage"


def test_endpoint_override_wins_over_the_network(store, tmp_path):
    """An endpoint listed in the overrides is attributed to its organisation even on a
    network that belongs to another, and the rest of that network stays where it was."""
    import sqlite3

    base, db, mmdbs = store
    with sqlite3.connect(db) as conn:
        endpoints = [e for (e,) in conn.execute(
            "SELECT endpoint_id FROM events WHERE network = '198.51.104.0/24' "
            "GROUP BY endpoint_id ORDER BY count(*)")]  # fmt: skip
    assert len(endpoints) >= 2
    overrides = tmp_path / "overrides.toml"
    overrides.write_text(
        OVERRIDES + f'\n[[org]]\nname = "Laptop Ltd"\nendpoints = ["{endpoints[0]}"]\n'
    )
    args = ["score", "--db", str(db), "--state", str(tmp_path / "s.sqlite3"), "--overrides",
            str(overrides), "--rules", str(base / "rules.toml"), "--json", "--as-of", T,
            *sum((["--mmdb", str(m)] for m in mmdbs), [])]  # fmt: skip
    docs = {d["organisation"]: d for d in json.loads(gateway(*args).stdout)}
    assert docs["Laptop Ltd"]["unique_sources_30d"]["endpoints"] <= 1
    assert docs["Laptop Ltd"]["attribution_source"] == "override"
    before = score_json(base, db, mmdbs, "--as-of", T)["Prod Corp"]
    moved = sum(docs["Laptop Ltd"]["totals"].values())
    assert moved > 0
    assert sum(docs["Prod Corp"]["totals"].values()) == sum(before["totals"].values()) - moved


def test_a_failed_fold_leaves_the_state_and_no_scratch_files(tmp_path, monkeypatch):
    """A fault in the side connection's fold (injected: nothing else makes SQLite fail
    there on demand) is raised by the run, the saved state is as before, and the scratch
    databases are removed; the next run folds the same events."""
    import sqlite3
    import tempfile

    from scorer import fold
    from scorer.enrich import Enricher
    from scorer.rules import load_rules
    from scorer.run import score

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    db, state = tmp_path / "events.sqlite3", tmp_path / "s.sqlite3"
    now = time.time()
    write_events(db, archetypes(now)[:200])
    first = score(db, state, load_rules(None), Enricher())
    write_events(db, archetypes(now)[:50])

    def broken(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error (injected)")

    with monkeypatch.context() as m:
        m.setattr(fold, "_group", broken)
        with pytest.raises(sqlite3.OperationalError, match="injected"):
            score(db, state, load_rules(None), Enricher())
    assert list((tmp_path / "tmp").iterdir()) == []
    with sqlite3.connect(state) as conn:
        last = conn.execute("SELECT value FROM meta WHERE key = 'last_event_id'").fetchone()[0]
    assert int(last) == 200
    again = score(db, state, load_rules(None), Enricher())
    assert (again.full, again.events_read) == (False, 50)
    assert list((tmp_path / "tmp").iterdir()) == []
    assert first.events_read == 200


def test_incremental_reads_only_new_events(tmp_path):
    now = time.time()
    db = tmp_path / "events.sqlite3"
    events = archetypes(now)
    write_events(db, events)
    state = tmp_path / "s.sqlite3"
    assert (
        f"{len(events)} events read"
        in gateway("score", "--db", str(db), "--state", str(state)).stdout
    )
    extra = archetypes(now)[:3]
    write_events(db, extra)
    assert (
        "incremental run, 3 events read"
        in gateway("score", "--db", str(db), "--state", str(state)).stdout
    )


def test_exports(store, tmp_path):
    base, db, mmdbs = store
    out = tmp_path / "events.csv"
    gateway("export", "--db", str(db), "--what", "events", "--format", "csv", "--since", "2026-05-25T00:00:00Z",
            "--until", T, "--output", str(out))  # fmt: skip
    rows = list(csv.DictReader(out.open()))
    assert rows and all("2026-05-25" <= r["ts"] <= T for r in rows)
    assert {"ts", "type", "network", "endpoint_id", "package", "version"} <= set(rows[0])
    assert "198.51.104.1" not in out.read_text()  # never a raw IP
    nd = gateway(
        "export",
        "--db",
        str(db),
        "--what",
        "events",
        "--format",
        "ndjson",
        "--until",
        "2026-01-01T00:00:00Z",
    ).stdout
    assert nd == "" or all(json.loads(line)["ts"] <= "2026-01-01" for line in nd.splitlines())
    packages = json.loads(
        gateway("export", "--db", str(db), "--what", "packages", "--format", "json").stdout
    )
    tool = {
        (p["version"], p["channel"]): p["downloads"] for p in packages if p["package"] == "tool"
    }
    assert tool[("1.0", "file")] >= 2 and ("1.2", "pypi") in tool and ("1.1", "container") in tool
    args = ["export", "--db", str(db), "--state", str(base / "export-state.sqlite3"), "--what", "organisations",
            "--format", "csv", "--until", T, "--overrides", str(base / "overrides.toml")]  # fmt: skip
    for m in mmdbs:
        args += ["--mmdb", str(m)]
    orgs_csv = list(csv.DictReader(io.StringIO(gateway(*args).stdout)))
    assert orgs_csv[0]["organisation"] == "Prod Corp" and orgs_csv[0]["stage"] == "Ongoing Usage"
    assert {"rank", "stage_since", "unique_endpoints_30d", "churn", "downloads_level"} <= set(
        orgs_csv[0]
    )


def test_bad_inputs_are_clear_errors(store, tmp_path):
    base, db, _ = store
    bad_rules = tmp_path / "rules.toml"
    bad_rules.write_text('[vulnerable]\ntool = ["<<1"]\n')
    r = gateway("score", "--db", str(db), "--rules", str(bad_rules), check=False)
    assert r.returncode == 2 and "bad version range" in r.stderr and "Traceback" not in r.stderr
    bad_rules.write_text("[pointz]\nx = 1\n")
    r = gateway("score", "--db", str(db), "--rules", str(bad_rules), check=False)
    assert r.returncode == 2 and "unknown rules key 'pointz'" in r.stderr
    r = gateway("score", "--db", str(tmp_path / "none.sqlite3"), check=False)
    assert r.returncode == 2 and "no event store" in r.stderr
    r = gateway("score", "--db", str(db), "--as-of", "yesterday", check=False)
    assert r.returncode == 2 and "ISO 8601" in r.stderr
    (tmp_path / "bad.mmdb").write_bytes(b"not a database")
    r = gateway("score", "--db", str(db), "--mmdb", str(tmp_path / "bad.mmdb"), check=False)
    assert r.returncode == 2 and "MaxMind" in r.stderr


def test_day_constant():
    assert DAY == 86400.0


def test_organisation_directory(store, tmp_path):
    base, db, mmdbs = store
    directory = tmp_path / "orgs.csv"
    directory.write_text("network,organisation,domain,type\n198.51.104.0/24,Production Corporation,prod.example,company\n"
                         "203.0.113.0/24,Shared CI Fleet,,ci\n")  # fmt: skip
    args = ["score", "--db", str(db), "--directory", str(directory), "--as-of", T, "--json"]
    for m in mmdbs:
        args += ["--mmdb", str(m)]
    orgs = {d["organisation"]: d for d in json.loads(gateway(*args).stdout)}
    prod = orgs["Production Corporation"]  # the directory outranks MaxMind data
    assert prod["attribution_source"] == "directory" and prod["confidence"] >= 0.9
    assert prod["stage"] == "Ongoing Usage"
    assert orgs["Shared CI Fleet"]["network_type"] == "ci"
    assert orgs["Shared CI Fleet"]["stage"] == "Interest"
    toml_dir = tmp_path / "orgs.toml"
    toml_dir.write_text(
        '[[network]]\nnetwork = "198.51.104.0/24"\norganisation = "Prod (TOML)"\ntype = "company"\n'
    )
    args[args.index(str(directory))] = str(toml_dir)
    assert "Prod (TOML)" in {d["organisation"] for d in json.loads(gateway(*args).stdout)}


def test_timeline_sweep_reads_the_same_windows_as_binary_search():
    """The timeline walks the active days with pointers; at every checkpoint it must see
    exactly what the windows' binary searches report."""
    import random

    from scorer.score import Activity, Day, Windows, _activity_sweep

    rng = random.Random(11)
    for _ in range(200):
        start = 739_000
        days = {}
        for _ in range(rng.randrange(1, 40)):
            days[start + rng.randrange(0, 200)] = Day(
                downloads=rng.randrange(3), docs=rng.randrange(2), web_low=rng.randrange(2),
                telemetry=rng.randrange(2), links=rng.randrange(2),
            )  # fmt: skip
        w = Windows(days)
        checkpoints = sorted(
            {start - 5, *(rng.randrange(start - 10, start + 400) for _ in range(60))}
        )
        swept = {a.t: a for a in _activity_sweep(w, checkpoints)}
        for t in checkpoints:
            first, last = w.first(t), w.last(t)
            if first is None:
                assert t not in swept
                continue
            cw = w.consecutive_weeks_from
            assert swept[t] == Activity(
                t, first, last, w.total(t, "downloads"), w.total(t, "page_views"),
                w.total(t, "telemetry"), w.count(t, 30, "downloads"), w.count(t, 30, "page_views"),
                w.count(t, 60, "downloads"), w.count(t, 60, "page_views"), cw is not None and cw <= t,
            )  # fmt: skip
