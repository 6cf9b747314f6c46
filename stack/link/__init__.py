"""Links carry packets between a stack and its peer: `tun` (+ `netns`, `vnet` offloads, `nsenter`)
toward the kernel, `pipe` between two asyncio stacks, `memory` for the virtual-clock simulator."""
