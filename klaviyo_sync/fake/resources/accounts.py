"""The account itself: ``GET /api/accounts`` (scope ``accounts:read``, 1/s and 15/m).

Klaviyo answers the one account the private key belongs to, as a one-element array. A second
fake account is another ``FakeKlaviyo(account_id=..., api_key=...)``."""

from __future__ import annotations

import random

from ..data import dumps
from ..hosting import Route
from ..jsonapi import fields_param, query_params, sparse
from . import Resource

ACCOUNT_FIELDS = {
    "contact_information", "contact_information.default_sender_email",
    "contact_information.default_sender_name", "contact_information.organization_name",
    "contact_information.street_address", "contact_information.street_address.address1",
    "contact_information.street_address.address2", "contact_information.street_address.city",
    "contact_information.street_address.country", "contact_information.street_address.region",
    "contact_information.street_address.zip", "contact_information.website_url", "id", "industry",
    "locale", "preferred_currency", "public_api_key", "test_account", "timezone",
}


class AccountsResource(Resource):
    ROUTES = (
        Route("GET", "/api/accounts", "_h_accounts", tier="XS", scope="accounts:read"),
    )
    OPTIONS = {"account_id": "XyZ123", "account_name": "Fake Store"}

    def build(self):
        rng = random.Random(f"klaviyo-fake-{self.seed}-{self.account_id}-account")
        name = self.account_name
        self._account_attributes = {
            "test_account": False,
            "contact_information": {
                "default_sender_name": name,
                "default_sender_email": f"hello@{name.lower().replace(' ', '')}.example",
                "website_url": f"https://{name.lower().replace(' ', '')}.example",
                "organization_name": name,
                "street_address": {"address1": f"{rng.randint(1, 999)} Main St", "address2": "",
                                   "city": "Boston", "region": "MA", "country": "US", "zip": "02110"},
            },
            "industry": "Apparel & Accessories",
            "timezone": self.account_timezone.key,
            "preferred_currency": "USD",
            "public_api_key": self.account_id,
            "locale": "en-US",
        }

    # ------------------------------------------------------------------ ground truth
    def account(self) -> dict:
        """The account resource as Klaviyo answers it (id and attributes)."""
        return {"id": self.account_id, "attributes": dict(self._account_attributes)}

    # ------------------------------------------------------------------ handlers
    def _h_accounts(self, ctx):
        params = query_params(ctx, {"fields[account]"})
        fa = fields_param(params, "fields[account]", ACCOUNT_FIELDS)
        link = f"{self.base_url}/api/accounts/{self.account_id}/"
        doc = {"data": [{"type": "account", "id": self.account_id,
                         "attributes": sparse(self._account_attributes, fa), "links": {"self": link}}],
               "links": self._links(ctx, None, None)}
        return 200, dumps(doc).encode("utf-8"), []
