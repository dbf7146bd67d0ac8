"""sync-images against the fake API (tests/stream_checks.py: what every simple full-pass stream does)."""

from .stream_checks import check_full_pass_stream


def test_sync_images(tmp_path):
    check_full_pass_stream(
        tmp_path, {"n_images": 130}, command="sync-images", table="images", collection="images",
        columns="id, name, image_url, format, size, hidden, updated_at", page_size=100, scope="images:read",
        change={"name": "spring-banner.png"},
        expected_row=lambda i, a: (i, a["name"], a["image_url"], a["format"], a["size"], int(a["hidden"]),
                                   a["updated_at"].replace("+00:00", "Z")))
