"""Automatic TLS (AUTOTLS_ENABLED): a certificate for AUTOTLS_HOST from an ACME CA
(Let's Encrypt by default), HTTPS on AUTOTLS_HTTPS_ADDR, and on AUTOTLS_HTTP_ADDR the
HTTP-01 challenge answers plus a redirect of everything else to HTTPS.

The ACME client is certbot's `acme` library (the optional extra `picolytics[tls]`).
Account key, certificates and pending challenge answers live in PostgreSQL, so several
instances share them, a restart reuses them, and whichever instance the CA reaches can
answer the challenge.

The modules, each resting on the ones before it:

    store          the account, certificates and pending answers in PostgreSQL
    timing         when to look again, wait for another instance, retry
    context        the HTTPS listener's one TLS context, and loading a certificate into it
    answers        pending HTTP-01 answers: this instance's in memory, others' in PostgreSQL
    ordering       one order over ACME: the account, the order, its HTTP-01 challenges
    renewal        CertificateManager: keeps a valid certificate installed, forever
    challenge_app  the port-80 app: challenge answers, redirect to HTTPS, the renewal loop
    endpoints      what to listen with, from the configuration

This package sits below the serving layer and builds no listeners: `endpoints` hands
over the addresses, the TLS context and the port-80 app, and the caller listens.
"""
