"""The suppressions view (global exclusions): after sync-profiles, exactly the profiles and channels the
fake says may not be emailed or texted, with the reason; a deleted profile leaves it."""

from klaviyo_sync.fake import FakeKlaviyo

from .e2e_helpers import cli_env, query, run_cli


def utc(ts):
    return None if ts is None else ts.replace("+00:00", "Z")


def expected(fake):
    rows = []
    for pid in fake.live_profile_ids():
        a = fake.profile(pid)["attributes"]
        email, sms = a["subscriptions"]["email"]["marketing"], a["subscriptions"]["sms"]["marketing"]
        if a.get("email") is not None and not email["can_receive_email_marketing"]:
            reasons = ",".join(sorted({s["reason"] for s in email["suppression"]}))
            rows.append((pid, "email", a["email"], reasons or email["consent"], email["consent"],
                         utc(email["consent_timestamp"])))
        if a.get("phone_number") is not None and not sms["can_receive_sms_marketing"]:
            rows.append((pid, "sms", a["phone_number"], sms["consent"], sms["consent"], utc(sms["consent_timestamp"])))
    return sorted(rows)


def test_suppressions_are_the_profiles_that_may_not_be_messaged(tmp_path):
    db = tmp_path / "k.db"
    with FakeKlaviyo(n_events=300, n_profiles=300) as fake:
        env = cli_env(fake, db)
        assert run_cli(["sync-profiles"], env).returncode == 0
        view = "SELECT profile_id, channel, address, reason, consent, consent_at FROM suppressions ORDER BY 1, 2"
        rows = expected(fake)
        assert query(db, view) == rows
        reasons = {r[3] for r in rows}
        assert {"UNSUBSCRIBED", "NEVER_SUBSCRIBED"} & reasons and reasons & {"HARD_BOUNCE", "SPAM_COMPLAINT",
                                                                           "USER_SUPPRESSED"}
        assert {r[1] for r in rows} == {"email", "sms"}
        gone = rows[0][0]
        fake.delete_profiles([gone])
        assert run_cli(["sync-profiles", "--full"], env).returncode == 0
        assert query(db, view) == expected(fake) and gone not in {r[0] for r in query(db, view)}
