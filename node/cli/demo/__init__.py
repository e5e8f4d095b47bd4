"""``meshnode demo``: a local mesh on this machine, with demo apps and traffic.

- ``command.py``: the command itself, each part of the demo in turn
- ``mesh.py``: ``DemoMesh``, starts N agents as child processes and stops them all
- ``chat.py``: the chat sample, streamed through a hop with the ``openai`` SDK
- ``apps.py``: the demo apps, where they are pinned, and sample requests
- ``placement.py``: one deployment declared once, placed by every node alike
- ``traffic.py``: requests to every node, who served them, and a kill -9 under load
- ``live.py``: the live view at the end, redrawn in a terminal, only its changes elsewhere
"""
