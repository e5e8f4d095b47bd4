"""Trust: who belongs to the mesh, and the keys that prove it (docs/security.md).

- ``token.py``: the mesh's join token: made on first use, kept in a 0600 file, found by one rule
- ``keyring.py``: keys derived from tokens; seals and opens every gossip packet (AEAD)
- ``sealed.py``: the data plane's node key, a sealed link's handshake (tokens and that key) and AEAD
  frames
- ``mesh_trust.py``: what this node holds to prove it belongs: its tokens and the keys derived
- ``rotation.py``: token rotation here: the ring on disk, and every part moved to a new ring
- ``webhook_keys.py``: the ED25519 key that signs webhooks, its JWKS, and verifying a webhook
"""
