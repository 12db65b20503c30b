"""Linux drivers: runc, overlayfs, network namespaces and nftables."""
