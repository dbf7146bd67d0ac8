"""What every simple full-pass stream must do, checked end to end against the fake (the real CLI
over real sockets): a stream's own test calls ``check_full_pass_stream`` with its literals.

- a first run stores exactly the fake's rows (ids and whole rows, from the fake's public
  truth), in the pages and requests the page size implies;
- a second run writes nothing;
- after a change and a removal in the fake, a run writes the one changed row and removes the
  one gone;
- without the scope: exit 4 and one line naming it (alone), ``skipped`` and exit 0 in sync-all.
"""

from __future__ import annotations

import math

from klaviyo_sync.fake import ALL_SCOPES, FakeKlaviyo

from .e2e_helpers import cli_env, ids, query, run_cli


def check_full_pass_stream(tmp_path, fake_options: dict, *, command: str, table: str, columns: str,
                           collection: str, expected_row, page_size: int, scope: str, change: dict) -> None:
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=0, **fake_options) as fake:
        fake.enforce_limits = True
        truth = getattr(fake, collection)
        env = cli_env(fake, db)
        first = run_cli([command, "--format", "json"], env)
        assert first.returncode == 0, first.describe()
        assert ids(db, table) == truth.ids()
        assert query(db, f"SELECT {columns} FROM {table} ORDER BY id") == [
            expected_row(i, truth.get(i)) for i in sorted(truth.ids())]
        pages = math.ceil(len(truth.ids()) / page_size)
        assert first.summary["rows"] == {table: len(truth.ids())} and first.summary[f"{table}_removed"] == 0
        assert first.summary["pages"] == first.summary["requests"] == pages

        again = run_cli([command, "--format", "json"], env)
        assert again.returncode == 0, again.describe()
        assert again.summary["rows"] == {table: 0} and again.summary[f"{table}_removed"] == 0

        gone, changed = sorted(truth.ids())[:2]
        truth.remove(gone)
        truth.update(changed, **change)
        third = run_cli([command, "--format", "json"], env)
        assert third.returncode == 0, third.describe()
        assert third.summary["rows"] == {table: 1} and third.summary[f"{table}_removed"] == 1
        assert ids(db, table) == truth.ids()
        assert query(db, f"SELECT {columns} FROM {table} WHERE id = ?", [changed]) == [
            expected_row(changed, truth.get(changed))]
        assert query(db, "SELECT command, status FROM sync_runs ORDER BY id") == [(command, "ok")] * 3

        fake.scopes = set(ALL_SCOPES - {scope})
        alone = run_cli([command], env)
        assert alone.returncode == 4, alone.describe()
        assert alone.stderr.startswith(f"klaviyo-sync: error: {command}: permission denied: the API key lacks "
                                       f"the {scope} scope") and len(alone.stderr.splitlines()) == 1
        step = run_cli(["sync-all", "--only", command], env)
        assert step.returncode == 0, step.describe()
        assert f"klaviyo-sync: skipped: {command}: the API key lacks the {scope} scope" in step.stderr
        assert query(db, "SELECT status, error FROM sync_runs ORDER BY id DESC LIMIT 1") == [
            ("skipped", f"the API key lacks the {scope} scope")]
