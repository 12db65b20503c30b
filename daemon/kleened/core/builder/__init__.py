"""The image builder's pure front end: Dockerfile parsing (`dockerfile`), variable expansion and ARG/ENV scoping
(`expand`), and `.dockerignore` matching (`ignore`). Nothing here does I/O or runs a process; the builder reads the
files, walks the context and runs the steps.
"""
