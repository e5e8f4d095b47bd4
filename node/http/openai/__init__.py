"""The OpenAI-compatible API (issue 13): routes, and one module per kind of request."""
