"""The stream engine (streams/engine.py) over mocked HTTP: paging, the incremental filter, the
mark committed with each page, full passes that find rows the account no longer has, partitions
and the never-older guard."""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qs, urlsplit

import pytest

from klaviyo_sync import db as store
from klaviyo_sync.errors import ApiError
from klaviyo_sync.streams.engine import Cursor, Stream, SyncResult, Table, run_stream

from .conftest import BASE

URL = f"{BASE}/api/things"
THINGS = Table("things", ("id", "name", "updated"), newer="updated")


def thing_row(resource: dict) -> tuple:
    a = resource["attributes"]
    return (resource["id"], a["name"], a["updated"].replace("+00:00", "Z"))


STREAM = Stream(name="things", path="/api/things", table=THINGS, row=thing_row, type="thing",
                scope="things:read", page_size=2, cursor=Cursor("updated"))


def thing(i: int, updated: str, name: str | None = None) -> dict:
    return {"type": "thing", "id": f"T{i}", "attributes": {"name": name or f"thing {i}", "updated": updated}}


class Api:
    """Serves ``items`` sorted by updated, 2 a page, honouring greater-than(updated,X); records
    every query. ``fail_on`` makes the n-th request (1-based) answer 400.

    Not the fake, on purpose: the engine is tested on a made-up stream (``/api/things``), so
    that what it does follows from the declaration alone, not from any real endpoint; the real
    streams' requests are checked against Klaviyo's spec in test_openapi_conformance.py."""

    def __init__(self, mocked, items):
        self.items = items
        self.queries: list[dict] = []
        self.fail_on: int | None = None
        mocked.add_callback("GET", URL, callback=self.answer)

    def answer(self, request):
        q = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        self.queries.append(q)
        if self.fail_on == len(self.queries):
            return 400, {}, '{"errors":[{"status":400,"code":"invalid","detail":"boom"}]}'
        rows = sorted(self.items, key=lambda r: (r["attributes"]["updated"], r["id"]))
        flt = q.get("filter")
        if flt:
            assert flt.startswith("greater-than(updated,") and flt.endswith(")"), flt
            since = flt[len("greater-than(updated,"):-1].replace("Z", "+00:00")
            rows = [r for r in rows if r["attributes"]["updated"] > since]
        start = int(q.get("page[cursor]", 0))
        size = int(q.get("page[size]", 2)) if "page[cursor]" not in q else 2
        page = rows[start:start + size]
        nxt = f"{URL}?page%5Bcursor%5D={start + size}" if start + size < len(rows) else None
        import json
        return 200, {}, json.dumps({"data": page, "links": {"self": URL, "next": nxt}})


@pytest.fixture
def things_db(db):
    db["things"].create({"id": str, "name": str, "updated": str}, pk="id")
    return db


def rows(db) -> set:
    return set(db.execute("SELECT id, name, updated FROM things").fetchall())


def test_first_run_reads_everything_then_only_what_changed(mocked, client, things_db):
    items = [thing(i, f"2026-01-0{i}T00:00:00+00:00") for i in range(1, 6)]
    api = Api(mocked, items)
    result = SyncResult()
    run_stream(client, things_db, STREAM, result)
    assert rows(things_db) == {thing_row(t) for t in items}
    assert result.pages == 3 and result.rows == {"things": 5}
    assert api.queries[0] == {"sort": "updated", "page[size]": "2"}  # no filter on a first run
    assert store.get_state(things_db, "things.mark") == "2026-01-05T00:00:00Z"

    items[1]["attributes"].update(name="renamed", updated="2026-01-07T00:00:00+00:00")
    api.queries.clear()
    result = SyncResult()
    run_stream(client, things_db, STREAM, result)
    # One second back from the mark: same-second ties are read again, never skipped.
    assert api.queries == [{"filter": "greater-than(updated,2026-01-04T23:59:59Z)", "sort": "updated",
                            "page[size]": "2"}]
    assert result.rows == {"things": 1}  # T5 is read again but unchanged: not rewritten
    assert ("T2", "renamed", "2026-01-07T00:00:00Z") in rows(things_db)
    assert store.get_state(things_db, "things.mark") == "2026-01-07T00:00:00Z"


def test_a_failed_page_keeps_the_committed_pages_and_their_mark(mocked, client, things_db):
    items = [thing(i, f"2026-01-0{i}T00:00:00+00:00") for i in range(1, 6)]
    api = Api(mocked, items)
    api.fail_on = 2
    with pytest.raises(ApiError):
        run_stream(client, things_db, STREAM, SyncResult())
    assert rows(things_db) == {thing_row(t) for t in items[:2]}
    assert store.get_state(things_db, "things.mark") == "2026-01-02T00:00:00Z"

    api.fail_on = None
    api.queries.clear()
    run_stream(client, things_db, STREAM, SyncResult())
    assert api.queries[0]["filter"] == "greater-than(updated,2026-01-01T23:59:59Z)"  # resumes, not page one
    assert rows(things_db) == {thing_row(t) for t in items}


def test_full_pass_hands_the_keys_it_saw_to_on_missing(mocked, client, things_db):
    items = [thing(i, f"2026-01-0{i}T00:00:00+00:00") for i in range(1, 4)]
    Api(mocked, items)
    run_stream(client, things_db, STREAM, SyncResult())
    del items[1]  # T2 is deleted in the account

    def on_missing(db, seen):
        gone = [r[0] for r in db.execute(f"SELECT id FROM things WHERE id NOT IN (SELECT id FROM {seen})")]
        db.execute(f"DELETE FROM things WHERE id NOT IN (SELECT id FROM {seen})")
        assert gone == ["T2"]
        return len(gone)

    result = SyncResult()
    run_stream(client, things_db, STREAM, result, full=True, on_missing=on_missing)
    assert {r[0] for r in rows(things_db)} == {"T1", "T3"}
    assert result.extra["things_removed"] == 1
    assert store.get_state(things_db, "things.full_pass_at") is not None


def test_an_incremental_pass_never_calls_on_missing(mocked, client, things_db):
    Api(mocked, [thing(1, "2026-01-01T00:00:00+00:00")])
    run_stream(client, things_db, STREAM, SyncResult())

    def on_missing(db, seen):  # an incremental pass sees only what changed: it must not judge
        raise AssertionError("called on an incremental pass")

    run_stream(client, things_db, STREAM, SyncResult(), on_missing=on_missing)


def test_never_replaced_by_an_older_version(things_db):
    THINGS.write(things_db, [("T1", "new", "2026-02-01T00:00:00Z")])
    assert THINGS.write(things_db, [("T1", "old", "2026-01-01T00:00:00Z")]) == 0
    assert rows(things_db) == {("T1", "new", "2026-02-01T00:00:00Z")}
    assert THINGS.write(things_db, [("T1", "newer", "2026-03-01T00:00:00Z")]) == 1


def test_partitions_each_get_a_pass_and_the_filter_joins_with_and(mocked, client, things_db):
    seen = []

    def answer(request):
        seen.append({k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()})
        return 200, {}, '{"data": [], "links": {"self": "x"}}'

    mocked.add_callback("GET", URL, callback=answer)
    stream = dataclasses.replace(STREAM, cursor=None, filters=("equals(kind,'a')",),
                                 partitions=(("equals(archived,false)",), ("equals(archived,true)",)))
    run_stream(client, things_db, stream, SyncResult())
    assert [q["filter"] for q in seen] == ["and(equals(kind,'a'),equals(archived,false))",
                                           "and(equals(kind,'a'),equals(archived,true))"]


def test_a_stream_declares_either_a_row_function_or_a_page_split():
    with pytest.raises(ValueError, match="either row= or rows="):
        Stream(name="bad", path="/api/bad", table=THINGS, scope="x")
    with pytest.raises(ValueError, match="either row= or rows="):
        Stream(name="bad", path="/api/bad", table=THINGS, scope="x", row=thing_row, rows=lambda page, p: [])
