"""sync-coupons: coupons, and with --codes their codes (opt-in: a code is a secret)."""

from typing import Annotated

import typer

from ..streams.coupons import SYNC_COUPONS, sync_coupon_codes, sync_coupons
from ..streams.declare import COUPON_CODES_READ
from .base import Settings, SummaryFormatOpt, WaitOpt, _check_summary_format, _report, app, common, denied_as, recorded_run


@app.command("sync-coupons")
@common
def sync_coupons_cmd(
    settings: Settings,
    codes: Annotated[bool, typer.Option("--codes", help="Also read every coupon's codes (needs coupon-codes:read; "
                                                          "a code is a secret).")] = False,
    wait: WaitOpt = 0.0,
    fmt: SummaryFormatOpt = "auto",
) -> None:
    """Sync the account's coupons (coupons gone from the account are removed); --codes also syncs
    their codes into coupon_codes (sync-all never reads codes).

    Example: klaviyo-sync sync-coupons --codes
    """
    _check_summary_format(fmt)
    client = settings.client()
    with recorded_run(settings, SYNC_COUPONS.command, {"codes": codes, "base_url": settings.base_url}, wait) as run:
        run["client"] = client
        with denied_as(SYNC_COUPONS):
            sync_coupons(client, run["db"], run["result"])
        if codes:
            with denied_as(SYNC_COUPONS, COUPON_CODES_READ):
                sync_coupon_codes(client, run["db"], run["result"])
    _report(settings, run, fmt)
