"""Chunkers: the IPFS profiles, fixed-size, FastCDC and safetensors tensor-aware cutting."""
