"""klee's commands, one module per object kind; `klee.cli` loads a module when it is used."""
