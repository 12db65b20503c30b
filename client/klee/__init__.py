"""klee: the command-line client of Kleene.

Importing this package is cheap on purpose: it carries the version and nothing else, so that
`klee --help` and `python -m klee` start without loading httpx, websockets, rich or yaml.
"""

__version__ = "0.1.0"
