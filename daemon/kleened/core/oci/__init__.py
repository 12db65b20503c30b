"""OCI images: registry references, manifests, the registry protocol, pull, push, archives.

Portable logic only: the network and files of the host are reached through the small
protocols in `interfaces`, implemented in `kleened.platform`.
"""
