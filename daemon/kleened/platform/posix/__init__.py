"""Host code that is the same on every POSIX backend: host commands, safe tar extraction,
copying into a container root, paths resolved inside a root, downloads."""
