"""Demo apps, one pattern per file; each opens with what it shows and the command that runs it.

- ``echo.py``: the smallest app, answering every request with the request itself
- ``stream.py``: an answer in pieces, as a language model writes tokens (``async_predict``)
- ``embeddings.py``: sentence embeddings (all-MiniLM-L6-v2), batched across concurrent requests
- ``text_to_image.py``: text to image with diffusers, answering with a PNG file
- ``text_generation.py``: a causal language model, tokens streamed, concurrent requests batched
- ``any_model.py``: many models behind one deployment, a few kept warm (fal's AnyModelRunner)
- ``external_server/``: an app that is an HTTP server started from a ``config.yaml``
"""
