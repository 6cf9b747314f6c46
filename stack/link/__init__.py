"""Links carry segments between a stack and its peer: `memory` (virtual clock) and `tun` (kernel)."""
