"""Running models: the predictor API and everything a replica's worker process needs to serve one.

- ``predictor.py``: ``Predictor``, what a user writes (``setup``, ``predict``, streaming, batching, hints)
- ``progress.py``: ``report_progress``, how far a request is (throttled, bounded, sent only when
  asked) and where a cancelled ``predict`` stops; ``previews.py``: its small JPEG previews
- ``app_ref.py``: from an app reference (``--deploy NAME=APP``) to a checked predictor instance
- ``app_policy.py``: which app references this node may run (its environment, ``--app-dir``), unimported
- ``worker.py``: the worker process's core, one predictor answering ``Call`` envelopes; with
  ``answers.py`` (results and errors as the envelopes that answer) and ``inline_calls.py`` (when a
  fast ``predict`` runs on the worker's loop instead of a thread)
- ``negotiation.py``: a file answer in a type the client's ``Accept`` allows (images converted)
- ``batching.py``: dynamic batching of concurrent requests into one ``predict_batch``
- ``model_cache.py``: an LRU of loaded models, for apps that serve many from one replica
- ``external.py``, ``external_config.py``, ``process_group.py``: apps that are an HTTP server
  started from a ``config.yaml``, and the process group that runs it; ``container.py``: such an
  app in a custom image: the docker/podman command lines, runtime detection, the running container
- ``model_dir.py``: the folder of a replica's model when its deployment names one from the mesh's stores
- ``moderation.py``: moderation in the worker: prompt checks before ``predict``, the output check after
- ``devices.py``: CPU, memory and accelerators of this machine (torch only in a child process)
- ``runtime_torch.py``: which device and dtype a model loads in
- ``tiny_diffusion.py``: the tiny offline Stable Diffusion pipeline, and the loader for real ones
- ``tiny_lm.py``: the tiny offline causal language model (and its chat template), and the loader
  for real checkpoints
- ``generation.py``: the text-generation engine (its own thread, batching concurrent requests),
  with ``generation_request.py`` (a request's bounded fields), ``batch_decode.py`` (one batch
  through the model, step by step, on the KV cache), ``sampling.py`` and ``stops.py`` (the next
  token, incremental detokenizing and stop strings)

Nothing here imports ``meshnode``'s agent (``node/``); torch is imported only where a model needs it.
"""
