"""The site controller API (``docs/site-api.md``): the gateway's side and what its two servers
(the site agent and the simulator) share.

``fields`` reads a JSON object field by field; ``records`` turns controller JSON into typed
records and back; ``routes`` is the API's one table of methods and paths; ``serving`` reads
requests and answers errors; ``idempotency`` says what a repeated call answers and when a call
conflicts; ``client`` talks to one controller; ``tls`` sets up its TLS.
"""
