"""datasette-metadata: table and column descriptions generated from the database's schema."""

import json

from klaviyo_sync import db as store
from klaviyo_sync.describe import datasette_metadata, undescribed


def test_every_table_and_column_of_the_schema_is_described(tmp_path):
    database = store.open_db(tmp_path / "k.db")
    assert undescribed(database) == [], "describe these in klaviyo_sync/describe.py"
    meta = datasette_metadata(database, "k")
    tables = meta["databases"]["k"]["tables"]
    for name in database.table_names() + database.view_names():
        if name.startswith("_"):
            assert name not in tables
            continue
        cols = {c.name for c in (database[name] if name in database.table_names() else database.view(name)).columns}
        assert tables[name]["description"] and set(tables[name]["columns"]) == cols, name


def test_the_command_writes_metadata_for_the_file_datasette_will_open(cli, db_path, tmp_path):
    assert cli("datasette-metadata", key=False).exit_code == 8  # no database yet
    store.open_db(db_path).close()
    printed = cli("datasette-metadata", key=False)
    assert printed.exit_code == 0, printed.stderr
    meta = json.loads(printed.stdout)
    assert list(meta["databases"]) == [db_path.stem]  # Datasette names a database by its file
    events = meta["databases"][db_path.stem]["tables"]["events"]
    assert "UTC" in events["columns"]["datetime"]
    out = tmp_path / "metadata.json"
    written = cli("datasette-metadata", "-o", str(out), key=False)
    assert written.exit_code == 0 and written.stdout == "" and json.loads(out.read_text()) == meta
    bad = cli("datasette-metadata", "-o", str(tmp_path / "no" / "such" / "dir.json"), key=False)
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1
