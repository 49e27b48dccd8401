"""A browser for the conformance suite's authorization-code scenarios, named by the
adapter in BROWSER: it opens the authorization URL and follows the authorization
server's redirect to the login's listener on 127.0.0.1, as a person's browser would
after they consent (the suite's authorization servers consent at once)."""

import sys
import urllib.request

with urllib.request.urlopen(sys.argv[1], timeout=30) as response:  # noqa: S310 - a test's local URL
    response.read()
